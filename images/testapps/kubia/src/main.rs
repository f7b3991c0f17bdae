//! `kubia`: answers every request with `You've hit <hostname>`; `kubia get URL…` is the
//! client side (see `kubia::client`).
#![forbid(unsafe_code)]

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("get") {
        return kubia::client::run(&args[1..]).map_err(std::io::Error::other);
    }
    kubia::serve(|_req| kubia::Response::ok(format!("You've hit {}\n", kubia::hostname())))
}
