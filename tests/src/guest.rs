//! Test guests for ward-vmm: initrds whose `/init` is a busybox sh script, and the tiny
//! `ward-ready` program that writes ward-vmm's boot-time port from the guest.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// ward-vmm's boot-time port and its "guest ready" value (see `docs/vmm.md`).
pub const BOOT_PORT: u16 = 0x3f0;
pub const GUEST_READY: u8 = 123;

/// A static x86-64 ELF that does `ioperm(0x3f0, 1, 1)`, `outb(123, 0x3f0)`, `exit(0)`:
/// the guest side of ward-vmm's boot-time port, without a C toolchain.
pub fn ready_elf() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const CODE_AT: u64 = 64 + 56;
    let [plo, phi] = BOOT_PORT.to_le_bytes();
    let code: Vec<u8> = vec![
        0xb8,
        173,
        0,
        0,
        0, // mov eax, SYS_ioperm
        0xbf,
        plo,
        phi,
        0,
        0, // mov edi, port
        0xbe,
        1,
        0,
        0,
        0, // mov esi, 1
        0xba,
        1,
        0,
        0,
        0, // mov edx, 1
        0x0f,
        0x05, // syscall
        0xba,
        plo,
        phi,
        0,
        0, // mov edx, port
        0xb0,
        GUEST_READY, // mov al, 123
        0xee,        // out dx, al
        0xb8,
        60,
        0,
        0,
        0, // mov eax, SYS_exit
        0x31,
        0xff, // xor edi, edi
        0x0f,
        0x05, // syscall
    ];
    let total = CODE_AT + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(BASE + CODE_AT).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 0, 0, 0] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    for v in [0, BASE, BASE, total, total, 0x1000] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    assert_eq!(elf.len() as u64, CODE_AT);
    elf.extend_from_slice(&code);
    elf
}

/// Builds `dir/<name>.cpio`: busybox-static with its applets, `/bin/ward-ready`, and
/// `init` as `/init` (a `#!/bin/sh` script).
pub fn build_initrd(dir: &Path, name: &str, init: &str) -> PathBuf {
    build_initrd_with(dir, name, init, &[])
}

/// [`build_initrd`] plus `extra` executables, each `(name in /bin, host file)`.
pub fn build_initrd_with(dir: &Path, name: &str, init: &str, extra: &[(&str, &Path)]) -> PathBuf {
    let root = dir.join(format!("{name}.root"));
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox-static is installed (apt-get install busybox-static)");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let write_exec = |path: PathBuf, bytes: &[u8]| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_exec(root.join("bin/ward-ready"), &ready_elf());
    for (bin, host) in extra {
        write_exec(root.join("bin").join(bin), &std::fs::read(host).unwrap());
    }
    let script = format!("#!/bin/sh\n/bin/busybox --install -s /bin\n{init}\n");
    write_exec(root.join("init"), script.as_bytes());

    let out = dir.join(format!("{name}.cpio"));
    let files = Command::new("find")
        .arg(".")
        .current_dir(&root)
        .output()
        .expect("running find");
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&root)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .expect("running cpio (apt-get install cpio)");
    cpio.stdin.take().unwrap().write_all(&files.stdout).unwrap();
    assert!(cpio.wait().unwrap().success(), "cpio failed");
    let _ = std::fs::remove_dir_all(&root);
    out
}

/// The `ward-vmm` binary of this workspace, built if needed.
pub fn vmm_binary() -> PathBuf {
    let root = crate::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "ward-vmm", "--bin", "ward-vmm"])
        .current_dir(&root)
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building ward-vmm failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("debug/ward-vmm")
}

/// `tests/src/bin/vsock-probe.rs` built as a static executable (it runs in the guest and,
/// unchanged, on the VMM's side), at `dir/vsock-probe`: against musl when that target is
/// installed, otherwise glibc with `crt-static` (as `scripts/static-agent.sh` does). It
/// uses only std, so rustc builds it alone in a second or two, without the test crate's
/// dependencies.
pub fn vsock_probe(dir: &Path) -> PathBuf {
    let src = crate::workspace_root().join("tests/src/bin/vsock-probe.rs");
    let out = dir.join("vsock-probe");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let build = |target: &str| {
        Command::new(&rustc)
            .args(["--edition", "2024", "-O", "--target", target])
            .args(["-C", "target-feature=+crt-static", "-o"])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("running rustc")
            .success()
    };
    assert!(
        build("x86_64-unknown-linux-musl") || build("x86_64-unknown-linux-gnu"),
        "building a static vsock-probe failed for both musl and glibc"
    );
    out
}

/// Runs ward-vmm where /dev/kvm does not exist (a private mount namespace with an empty
/// /dev): a configuration error must be reported as itself, not as "opening /dev/kvm".
pub fn vmm_without_kvm(args: &[&str]) -> (i32, String) {
    let vmm = vmm_binary();
    let out = Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs none /dev && exec \"$0\" \"$@\"",
        ])
        .arg(&vmm)
        .args(args)
        .output()
        .expect("running unshare");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A scratch directory under the workspace's `target/` (visible read-only in the nested
/// harness's L1, unlike `/tmp`).
pub fn scratch_dir(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::workspace_root().join("target"), PathBuf::from);
    let dir = target
        .join("ward-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The static build of workspace binary `package` (`scripts/static-bin.sh`: musl, else
/// glibc `crt-static`), as `.ci/run` and the demo build it.
pub fn static_binary(package: &str) -> PathBuf {
    let out = Command::new(crate::workspace_root().join("scripts/static-bin.sh"))
        .arg(package)
        .output()
        .expect("running scripts/static-bin.sh");
    assert!(
        out.status.success(),
        "scripts/static-bin.sh {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}
