//! The container lifecycle against a recording fake backend: no root, no
//! runtime binaries; checks what the library asks of a backend, in order,
//! and what it keeps on disk.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use image_runtime::backend::{
    Backend, BackendError, BackendState, Exit, ExitStatus, Process, Signal, Status,
};
use image_runtime::{ContainerStatus, Rootfs, Runtime, Stdio};

#[derive(Debug, Default, Clone)]
struct Fake {
    calls: Arc<Mutex<Vec<String>>>,
}

impl Fake {
    fn log(&self, s: String) {
        self.calls.lock().unwrap().push(s);
    }
    fn calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

#[derive(Debug)]
struct FakeProcess;

impl Process for FakeProcess {
    fn pid(&self) -> Option<u32> {
        Some(4242)
    }
    fn try_wait(&mut self) -> Result<Option<ExitStatus>, BackendError> {
        Ok(Some(ExitStatus(3)))
    }
    fn wait(&mut self) -> Result<Exit, BackendError> {
        Ok(Exit {
            status: ExitStatus(3),
            stdout: b"fake out".to_vec(),
            stderr: Vec::new(),
        })
    }
    fn kill_now(&mut self) {}
}

impl Backend for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    fn create(&self, id: &str, bundle: &Path) -> Result<(), BackendError> {
        assert!(bundle.join("config.json").is_file());
        self.log(format!("create {}", &id[..4]));
        Ok(())
    }
    fn start(
        &self,
        id: &str,
        _bundle: &Path,
        _stdio: Stdio,
    ) -> Result<Box<dyn Process>, BackendError> {
        self.log(format!("start {}", &id[..4]));
        Ok(Box::new(FakeProcess))
    }
    fn kill(&self, id: &str, signal: Signal) -> Result<(), BackendError> {
        self.log(format!("kill {} {}", &id[..4], signal.as_raw()));
        Ok(())
    }
    fn state(&self, _id: &str) -> Result<BackendState, BackendError> {
        Ok(BackendState {
            status: Status::Stopped,
            pid: None,
        })
    }
    fn delete(&self, id: &str, force: bool) -> Result<(), BackendError> {
        self.log(format!("delete {} {force}", &id[..4]));
        Ok(())
    }
}

#[test]
fn lifecycle_through_a_backend() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("bin/prog"), "").unwrap();
    std::fs::set_permissions(
        rootfs.join("bin/prog"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let fake = Fake::default();
    let rt = Runtime::new(&tmp.path().join("state"), fake.clone()).unwrap();

    let c = rt
        .container(Rootfs::Directory(rootfs.clone()))
        .id("abcd-1")
        .cmd(["prog", "arg"])
        .env("X=1")
        .create()
        .unwrap();
    assert_eq!(fake.calls(), ["create abcd"]);
    assert_eq!(c.status(), ContainerStatus::Created);
    let spec = c.spec().unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["prog", "arg"]);
    assert!(c.bundle().join("etc/hosts").is_file());
    assert_eq!(c.record().backend, "fake");

    // Another process sees it.
    let rt2 = Runtime::new(&tmp.path().join("state"), fake.clone()).unwrap();
    assert_eq!(rt2.list().unwrap()[0].status, ContainerStatus::Created);

    let mut running = c.start(Stdio::capture()).unwrap();
    assert_eq!(running.pid(), Some(4242));
    assert_eq!(
        rt2.load("abcd-1").unwrap().status(),
        ContainerStatus::Running
    );
    running.kill(Signal::TERM).unwrap();
    let exit = running.wait().unwrap();
    assert_eq!(
        (exit.status.code(), exit.stdout_str().as_str()),
        (3, "fake out")
    );
    let c = running.into_container();
    assert_eq!(c.status(), ContainerStatus::Stopped);
    assert_eq!(rt2.load("abcd-1").unwrap().record().exit_code, Some(3));

    // A stopped container starts again: the backend forgets the old run first.
    let (c, exit) = c
        .run(Stdio::capture(), std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(exit.unwrap().status.code(), 3);
    c.delete().unwrap();
    assert_eq!(
        fake.calls(),
        [
            "start abcd",
            "kill abcd 15",
            "delete abcd true",
            "create abcd",
            "start abcd",
            "delete abcd true"
        ]
    );
    assert!(rt.list().unwrap().is_empty());
    assert!(!tmp.path().join("state/containers/abcd-1").exists());

    // From an image config: its Cmd, and its ID recorded.
    let image = image_core::ImageConfig::from_bytes(
        br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["prog","x"],"Env":["A=b"]},"rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec(),
    )
    .unwrap();
    let c = rt
        .container(Rootfs::Directory(rootfs.clone()))
        .image_config(&image)
        .create()
        .unwrap();
    assert_eq!(
        c.record().image.as_deref(),
        Some(image.image_id().to_string().as_str())
    );
    let spec = c.spec().unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["prog", "x"]);
    assert!(p.env().as_ref().unwrap().contains(&"A=b".to_owned()));
    c.delete().unwrap();
    fake.calls();

    // IDs are checked; duplicates refused.
    assert!(rt
        .container(Rootfs::Directory(rootfs.clone()))
        .id("../x")
        .cmd(["prog"])
        .create()
        .is_err());
    let _c = rt
        .container(Rootfs::Directory(rootfs.clone()))
        .id("dup0")
        .cmd(["prog"])
        .create()
        .unwrap();
    let e = rt
        .container(Rootfs::Directory(rootfs))
        .id("dup0")
        .cmd(["prog"])
        .create()
        .unwrap_err();
    image_testsupport::chain::assert_said_once(&e);
    assert!(matches!(
        e,
        image_runtime::ContainerError::AlreadyExists { .. }
    ));
    rt.delete("dup0").unwrap();
}
