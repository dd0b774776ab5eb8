//! app-frontend (filled in by its own issue).
