//! A private OpenSSH server for the remote-template tests and benchmark:
//! Debian's `sshd`, started on 127.0.0.1 and a free high port with its
//! own host key, config and `authorized_keys` (for a key it generates)
//! under a temporary directory, stopped and removed on drop. Nothing
//! else on the machine is touched but `/run/sshd`, the empty directory
//! sshd insists on for privilege separation (made if missing).
//!
//! Self-contained (std only), so benches/ include it by path too.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshd {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
    /// The private key `authorized_keys` accepts.
    pub key: PathBuf,
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "anyfork-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("running ssh-keygen (package openssh-client)");
    assert!(st.success(), "ssh-keygen failed for {}", path.display());
}

impl Sshd {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: `make deps` installs openssh-server"
        );
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("anyfork-sshd-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let host = dir.join("host_ed25519");
        let key = dir.join("user_ed25519");
        keygen(&host);
        keygen(&key);
        std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys")).unwrap();
        if !Path::new("/run/sshd").exists() {
            let _ = std::fs::create_dir_all("/run/sshd");
            let _ = std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755));
        }
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                let out = Command::new("id").arg("-un").output().unwrap();
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            });
        let root = user == "root";
        for attempt in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
                     AuthorizedKeysFile {auth}\nStrictModes no\nUsePAM no\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                     PubkeyAuthentication yes\nPermitRootLogin {root}\nAllowUsers {user}\n\
                     PrintMotd no\nPrintLastLog no\nLogLevel ERROR\n\
                     MaxStartups 200:30:400\nMaxSessions 200\n",
                    host = host.display(),
                    pid = dir.join("sshd.pid").display(),
                    auth = dir.join("authorized_keys").display(),
                    root = if root { "prohibit-password" } else { "no" },
                ),
            )
            .unwrap();
            let mut child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting sshd");
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Sshd {
                        child,
                        dir,
                        port,
                        key,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            assert!(attempt < 4, "sshd did not start on port {port}: {err}");
        }
        unreachable!()
    }

    /// `ssh` to this server with its key, non-interactive, then `remote`.
    pub fn ssh(&self, key: &Path, port: u16, remote: &[&str]) -> Vec<Vec<u8>> {
        let port = port.to_string();
        let key = key.display().to_string();
        let mut v: Vec<String> = [
            "ssh",
            "-F",
            "/dev/null",
            "-i",
            &key,
            "-p",
            &port,
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "127.0.0.1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(remote.iter().map(|s| s.to_string()));
        v.into_iter().map(String::into_bytes).collect()
    }

    /// `ssh` to this server running `anyfork-serve --stdio` at `serve`.
    pub fn transport(&self, serve: &Path) -> Vec<Vec<u8>> {
        self.ssh(
            &self.key,
            self.port,
            &[&serve.display().to_string(), "--stdio"],
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
