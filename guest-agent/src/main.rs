//! kennel-agent: PID 1 of a pod VM.

fn main() {
    eprintln!("kennel-agent: not built yet");
    std::process::exit(1);
}
