//! app-backend (filled in by its own issue).
