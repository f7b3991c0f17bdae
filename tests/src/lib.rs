//! End-to-end tests across kennel's crates
