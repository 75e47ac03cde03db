//! The `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` Docker gives a
//! container: files in the container's state directory, bind-mounted over
//! the image's own (which stay untouched in the image).

use std::path::Path;

use crate::spec::EtcFiles;

/// Docker's `/etc/hosts` for a container with its own network namespace.
pub fn hosts() -> String {
    "127.0.0.1\tlocalhost\n\
     ::1\tlocalhost ip6-localhost ip6-loopback\n\
     fe00::0\tip6-localnet\n\
     ff00::0\tip6-mcastprefix\n\
     ff02::1\tip6-allnodes\n\
     ff02::2\tip6-allrouters\n"
        .to_owned()
}

/// The host's `resolv.conf` as Docker adapts it: nameservers on the
/// loopback are unreachable from the container's network namespace and are
/// dropped; when none is left, Google's public resolvers are used.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// Writes the three files into `dir` (created if missing) and returns their paths.
/// With `host_network`, the host's `/etc/hosts` and `/etc/resolv.conf`
/// are copied as they are.
///
/// # Errors
/// Any I/O error writing them.
pub fn write(dir: &Path, hostname: &str, host_network: bool) -> std::io::Result<EtcFiles> {
    std::fs::create_dir_all(dir)?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let (hosts_text, resolv) = if host_network {
        (
            std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| hosts()),
            host_resolv,
        )
    } else {
        (hosts(), resolv_conf(&host_resolv))
    };
    let files = EtcFiles {
        hosts: dir.join("hosts"),
        hostname: dir.join("hostname"),
        resolv_conf: dir.join("resolv.conf"),
    };
    std::fs::write(&files.hosts, hosts_text)?;
    std::fs::write(&files.hostname, format!("{hostname}\n"))?;
    std::fs::write(&files.resolv_conf, resolv)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let r = resolv_conf("search x\nnameserver 127.0.0.53\noptions edns0\n");
        assert_eq!(
            r,
            "search x\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let r = resolv_conf("nameserver 10.0.0.1\nnameserver ::1\n");
        assert_eq!(r, "nameserver 10.0.0.1\n");
    }

    #[test]
    fn writes_files() {
        let tmp = tempfile::tempdir().unwrap();
        let f = write(&tmp.path().join("etc"), "abc", false).unwrap();
        assert_eq!(std::fs::read_to_string(f.hostname).unwrap(), "abc\n");
        assert!(std::fs::read_to_string(f.hosts)
            .unwrap()
            .starts_with("127.0.0.1\tlocalhost"));
    }
}
