//! testimages
