//! Vector index (work in progress).
