//! `kubia-pet`: the stateful variant. POST stores the body under `/var/data/kubia.txt`
//! (`$KUBIA_DATA_DIR` overrides the directory); GET returns the host name and the stored data.
#![forbid(unsafe_code)]

use std::path::PathBuf;

fn data_file() -> PathBuf {
    let dir = std::env::var("KUBIA_DATA_DIR").unwrap_or_else(|_| "/var/data".to_string());
    PathBuf::from(dir).join("kubia.txt")
}

fn handle(req: kubia::Request) -> kubia::Response {
    let file = data_file();
    if req.method == "POST" {
        let res = file
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|_| std::fs::write(&file, &req.body));
        match res {
            Ok(()) => {
                println!("New data has been received and stored.");
                kubia::Response::ok(format!("Data stored on pod {}\n", kubia::hostname()))
            }
            Err(e) => kubia::Response {
                status: 500,
                body: format!("cannot store data: {e}\n"),
            },
        }
    } else {
        let data =
            std::fs::read_to_string(&file).unwrap_or_else(|_| "No data posted yet".to_string());
        kubia::Response::ok(format!(
            "You've hit {}\nData stored on this pod: {data}\n",
            kubia::hostname()
        ))
    }
}

fn main() -> std::io::Result<()> {
    kubia::serve(handle)
}
