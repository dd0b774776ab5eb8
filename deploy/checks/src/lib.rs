//! Offline checks of deploy/ (filled in by the deploy issue).
