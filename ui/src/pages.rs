//! TODO(issue 7): pages
