//! Turns a CRI `ContainerConfig` plus the image's config into the OCI runtime spec the agent
//! takes (`oci_spec_json`), and an exec command into an OCI process (`oci_process_json`).

use images::spec::ImageConfig;
use k8s_cri::v1::{ContainerConfig, LinuxContainerResources};
use serde_json::{json, Value};

/// Errors building a spec.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OciError {
    /// Neither the request nor the image names a program.
    #[error(
        "no command: the container config has no command/args and the image no entrypoint/cmd"
    )]
    NoCommand,
    /// A user name that is not numeric (kennel does not read the image's /etc/passwd).
    #[error("user {0:?}: only numeric users are supported")]
    UserName(String),
}

/// Default PATH when neither image nor request sets one.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The program a container runs, Docker/CRI style: `command` replaces the entrypoint, `args`
/// replace the image's cmd.
pub fn process_args(cfg: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>, OciError> {
    let ic = image.config.clone().unwrap_or_default();
    let mut argv = if cfg.command.is_empty() {
        ic.entrypoint.clone().unwrap_or_default()
    } else {
        cfg.command.clone()
    };
    if !cfg.args.is_empty() {
        argv.extend(cfg.args.iter().cloned());
    } else if cfg.command.is_empty() {
        argv.extend(ic.cmd.clone().unwrap_or_default());
    }
    if argv.is_empty() {
        return Err(OciError::NoCommand);
    }
    Ok(argv)
}

fn env(cfg: &ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut env: Vec<String> = image
        .config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(kv);
    };
    if !hostname.is_empty() {
        set(format!("HOSTNAME={hostname}"));
    }
    for kv in &cfg.envs {
        set(format!("{}={}", kv.key, kv.value));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    env
}

fn user(cfg: &ContainerConfig, image: &ImageConfig) -> Result<(u32, u32, Vec<u32>), OciError> {
    let sc = cfg.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let gid = sc
        .and_then(|s| s.run_as_group.as_ref())
        .map(|g| g.value as u32);
    let groups: Vec<u32> = sc
        .map(|s| s.supplemental_groups.iter().map(|g| *g as u32).collect())
        .unwrap_or_default();
    if let Some(uid) = sc.and_then(|s| s.run_as_user.as_ref()) {
        return Ok((uid.value as u32, gid.unwrap_or(0), groups));
    }
    if let Some(name) = sc
        .map(|s| s.run_as_username.as_str())
        .filter(|n| !n.is_empty())
    {
        return Err(OciError::UserName(name.to_string()));
    }
    let image_user = image
        .config
        .as_ref()
        .and_then(|c| c.user.clone())
        .unwrap_or_default();
    if image_user.is_empty() {
        return Ok((0, gid.unwrap_or(0), groups));
    }
    let mut parts = image_user.splitn(2, ':');
    let u = parts.next().unwrap_or("");
    let g = parts.next();
    let uid: u32 = u
        .parse()
        .map_err(|_| OciError::UserName(image_user.clone()))?;
    let image_gid = match g {
        Some(g) => g
            .parse()
            .map_err(|_| OciError::UserName(image_user.clone()))?,
        None => 0,
    };
    Ok((uid, gid.unwrap_or(image_gid), groups))
}

/// The `linux.resources` block for CRI resources.
pub fn resources(r: Option<&LinuxContainerResources>) -> Value {
    let mut res = json!({"pids": {"limit": 4096}});
    if let Some(r) = r {
        if r.memory_limit_in_bytes > 0 {
            res["memory"] = json!({"limit": r.memory_limit_in_bytes});
        }
        let mut cpu = serde_json::Map::new();
        if r.cpu_shares > 0 {
            cpu.insert("shares".into(), json!(r.cpu_shares));
        }
        if r.cpu_quota > 0 {
            cpu.insert("quota".into(), json!(r.cpu_quota));
        }
        if r.cpu_period > 0 {
            cpu.insert("period".into(), json!(r.cpu_period));
        }
        if !cpu.is_empty() {
            res["cpu"] = Value::Object(cpu);
        }
    }
    res
}

/// The full OCI spec for a container of a sandbox with `hostname`.
pub fn container_spec(
    cfg: &ContainerConfig,
    image: &ImageConfig,
    hostname: &str,
) -> Result<Value, OciError> {
    let args = process_args(cfg, image)?;
    let (uid, gid, groups) = user(cfg, image)?;
    let cwd = if !cfg.working_dir.is_empty() {
        cfg.working_dir.clone()
    } else {
        image
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    let readonly = cfg
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.readonly_rootfs);
    let mut user = json!({"uid": uid, "gid": gid});
    if !groups.is_empty() {
        user["additionalGids"] = json!(groups);
    }
    Ok(json!({
        "ociVersion": "1.0.2",
        "hostname": hostname,
        "root": {"path": "rootfs", "readonly": readonly},
        "process": {
            "terminal": cfg.tty,
            "args": args,
            "env": env(cfg, image, hostname),
            "cwd": cwd,
            "user": user,
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/etc/resolv.conf", "type": "bind", "source": "/etc/resolv.conf", "options": ["rbind", "ro"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hosts", "options": ["rbind", "ro"]},
            {"destination": "/etc/hostname", "type": "bind", "source": "/etc/hostname", "options": ["rbind", "ro"]}
        ],
        "linux": {
            "resources": resources(cfg.linux.as_ref().and_then(|l| l.resources.as_ref())),
        }
    }))
}

/// The OCI process of an exec in a container: `cmd` with the container's environment, user
/// and working directory (taken from its spec's `process`), or root in `/` without a spec;
/// `terminal` when the exec asked for a tty.
pub fn exec_process(cmd: &[String], container_spec: Option<&Value>, terminal: bool) -> Value {
    let mut p = container_spec
        .and_then(|s| s.get("process"))
        .cloned()
        .unwrap_or_else(
            || json!({"env": [DEFAULT_PATH], "cwd": "/", "user": {"uid": 0, "gid": 0}}),
        );
    p["terminal"] = json!(terminal);
    p["args"] = json!(cmd);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::KeyValue;

    fn image(entry: &[&str], cmd: &[&str], env: &[&str]) -> ImageConfig {
        serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": {
                "Entrypoint": entry, "Cmd": cmd, "Env": env, "WorkingDir": "/app", "User": "1000:50"
            },
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .unwrap()
    }

    fn cfg(command: &[&str], args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_docker_rules() {
        let img = image(&["/ep"], &["c1", "c2"], &[]);
        assert_eq!(
            process_args(&cfg(&[], &[]), &img).unwrap(),
            ["/ep", "c1", "c2"]
        );
        assert_eq!(process_args(&cfg(&[], &["a"]), &img).unwrap(), ["/ep", "a"]);
        assert_eq!(process_args(&cfg(&["/x"], &[]), &img).unwrap(), ["/x"]);
        assert_eq!(
            process_args(&cfg(&["/x"], &["y"]), &img).unwrap(),
            ["/x", "y"]
        );
        let empty = image(&[], &[], &[]);
        assert_eq!(
            process_args(&cfg(&[], &[]), &empty),
            Err(OciError::NoCommand)
        );
    }

    #[test]
    fn spec_merges_env_user_cwd_and_resources() {
        let img = image(&["/ep"], &[], &["PATH=/bin", "A=1"]);
        let mut c = cfg(&[], &[]);
        c.envs = vec![KeyValue {
            key: "A".into(),
            value: "2".into(),
        }];
        c.linux = Some(k8s_cri::v1::LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 1 << 24,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                ..Default::default()
            }),
            ..Default::default()
        });
        let s = container_spec(&c, &img, "pod").unwrap();
        let env: Vec<String> = serde_json::from_value(s["process"]["env"].clone()).unwrap();
        assert_eq!(env, ["PATH=/bin", "HOSTNAME=pod", "A=2"]);
        assert_eq!(s["process"]["user"]["uid"], 1000);
        assert_eq!(s["process"]["user"]["gid"], 50);
        assert_eq!(s["process"]["cwd"], "/app");
        assert_eq!(s["hostname"], "pod");
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 1 << 24);
        assert_eq!(s["linux"]["resources"]["cpu"]["quota"], 50_000);
    }

    #[test]
    fn exec_inherits_env_user_and_cwd() {
        let img = image(&["/ep"], &[], &["PATH=/bin", "A=1"]);
        let spec = container_spec(&cfg(&[], &[]), &img, "pod").unwrap();
        let p = exec_process(&["env".to_string()], Some(&spec), false);
        assert_eq!(p["args"], json!(["env"]));
        assert_eq!(p["user"]["uid"], 1000);
        assert_eq!(p["cwd"], "/app");
        assert_eq!(p["terminal"], false);
        assert!(p["env"].as_array().unwrap().contains(&json!("A=1")));
        let bare = exec_process(&["true".to_string()], None, true);
        assert_eq!(bare["user"]["uid"], 0);
        assert_eq!(bare["terminal"], true);
    }

    #[test]
    fn user_names_are_refused_with_the_name() {
        let mut img = image(&["/ep"], &[], &[]);
        img.config.as_mut().unwrap().user = Some("nobody".into());
        let err = container_spec(&cfg(&[], &[]), &img, "h").unwrap_err();
        assert_eq!(err, OciError::UserName("nobody".into()));
    }
}
