//! `kubia`: answers every request with `You've hit <hostname>`.
#![forbid(unsafe_code)]

fn main() -> std::io::Result<()> {
    kubia::serve(|_req| kubia::Response::ok(format!("You've hit {}\n", kubia::hostname())))
}
