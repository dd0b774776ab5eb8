//! zt-sidecar (filled in by the sidecar issue).
