//! GitHub API stand-in (filled in by the backend issue).
