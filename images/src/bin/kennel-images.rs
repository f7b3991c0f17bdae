//! kennel-images CLI
fn main() {}
