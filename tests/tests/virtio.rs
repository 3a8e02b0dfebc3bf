//! ward-vmm's virtio devices with a real Linux guest, in the nested harness: virtio-blk
//! (read-write data checked from the host after shutdown, a read-only drive refusing writes,
//! an empty slot filled by `PUT /drives/{id}` while the guest runs), virtio-rng
//! (`/dev/hwrng`), virtio-vsock both ways with checksums and 64 concurrent streams, and the
//! per-device counters of `GET /metrics`. One L1 boot, one VM run for all of it.

use std::time::Duration;

use ward_nest::{KernelKind, Options, kernel_path};
use ward_tests::guest::{build_initrd_with, scratch_dir, vmm_binary, vmm_without_kvm, vsock_probe};
use ward_tests::{Need, require};

/// Bytes each bulk vsock stream moves (each way): `WARD_VSOCK_MB`, 100 MB by default as
/// issue 8 asks.
fn vsock_bytes() -> u64 {
    std::env::var("WARD_VSOCK_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(100)
        * 1_000_000
}

/// The guest: block checks, hwrng, wait for the swap, then vsock clients and a server.
const GUEST_INIT: &str = r#"
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
P=/bin/vsock-probe
if grep -q ward.slots /proc/cmdline; then
  echo "slots-vd=$(ls /sys/block | grep -c '^vd') vsock=$(ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport | grep -c virtio) rng=$(cat /sys/class/misc/hw_random/rng_current)"
  reboot -f
fi
N=$(sed 's/.*ward.n=\([0-9]*\).*/\1/' /proc/cmdline)
echo "serial-vda=$(cat /sys/block/vda/serial)"
echo "rng-current=$(cat /sys/class/misc/hw_random/rng_current)"
echo "rng-a=$(head -c 4096 /dev/hwrng | md5sum) rng-len=$(head -c 4096 /dev/hwrng | wc -c)"
echo "rng-b=$(head -c 4096 /dev/hwrng | md5sum)"
$P pattern 4194304 | dd of=/dev/vda bs=65536 conv=fsync 2>/dev/null; echo "blk-write-rc=$?"
blockdev --flushbufs /dev/vda
echo "blk-read=$(head -c 4194304 /dev/vda | sha256sum)"
echo "ro-flag=$(cat /sys/block/vdb/ro)"
$P pattern 4096 9 | dd of=/dev/vdb bs=4096 conv=fsync 2>/tmp/e; echo "ro-write-rc=$?"
echo "ro-write-err=$(tr '\n' ' ' </tmp/e)"
echo "ro-read=$(sha256sum </dev/vdb)"
echo "spare-size=$(cat /sys/block/vdc/size)"
echo WAITING-FOR-SWAP
i=0; while [ "$(cat /sys/block/vdc/size)" = 0 ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
echo "spare-size-after=$(cat /sys/block/vdc/size) spare-serial=$(cat /sys/block/vdc/serial)"
echo "swapped-read=$(sha256sum </dev/vdc)"
$P serve-vsock 5000 &
echo "g2h-put=$($P client-vsock 2 6000 PUT $N 2>&1)"
echo "g2h-get=$($P client-vsock 2 6000 GET $N 2>&1)"
echo "g2h-many=$($P client-vsock 2 6000 ECHO 262144 64 2>&1)"
echo GUEST-VSOCK-DONE
while true; do sleep 10; done
"#;

/// L1: images, the host-side vsock server, one ward-vmm run driven over its API, and the
/// host-side checks after it ends.
const L1_SCRIPT: &str = r#"
set -u
VMM=$1; K=$2; D=$3; N=$4
P=$D/vsock-probe
T=/tmp
$P pattern 4194304 1 >$T/data.img
$P pattern 65536 3 >$T/ro.img
$P pattern 1048576 7 >$T/new.img
echo "host-ro-before=$(sha256sum <$T/ro.img)"
echo "host-new=$(sha256sum <$T/new.img)"
echo "host-pattern=$($P pattern 4194304 | sha256sum)"
$P serve-unix $T/v.sock_6000 2>$T/serve.err &
api() { curl -sS --unix-socket $T/api.sock "$@"; }
wait_for() { i=0; while ! grep -q "$1" $T/vm.out 2>/dev/null && [ $i -lt 6000 ]; do sleep 0.1; i=$((i+1)); done; }
"$VMM" --kernel $K --initrd $D/virtio.cpio --mem-mib 256 --api-sock $T/api.sock \
  --cmdline "console=ttyS0 reboot=k panic=-1 quiet ward.n=$N" --serial $T/vm.out \
  --drive id=data,path=$T/data.img,serial=data-serial \
  --drive id=ro,path=$T/ro.img,ro --drive id=spare,ro \
  --vsock-uds $T/v.sock --rng 2>$T/vm.err &
pid=$!
wait_for WAITING-FOR-SWAP
echo "drive-before=$(api http://localhost/drives/spare)"
echo "swap-http=$(api -X PUT -d "{\"path\":\"$T/new.img\",\"serial\":\"swapped\"}" -o $T/swap.body -w '%{http_code}' http://localhost/drives/spare) $(cat $T/swap.body)"
echo "swap-missing=$(api -X PUT -d '{"path":"/nonexistent.img"}' -w ' %{http_code}' http://localhost/drives/spare)"
echo "drive-after=$(api http://localhost/drives/spare)"
wait_for GUEST-VSOCK-DONE
echo "h2g-put=$($P client-uds $T/v.sock 5000 PUT $N 2>&1)"
echo "h2g-get=$($P client-uds $T/v.sock 5000 GET $N 2>&1)"
echo "h2g-many=$($P client-uds $T/v.sock 5000 ECHO 262144 64 2>&1)"
echo "metrics=$(api http://localhost/metrics)"
echo "shutdown-http=$(api -X PUT -d '{"action_type":"shutdown"}' -o /dev/null -w '%{http_code}' http://localhost/vm/actions)"
wait $pid; rc=$?
echo "vmm-rc=$rc"
echo "host-data-after=$(sha256sum <$T/data.img)"
echo "host-ro-after=$(sha256sum <$T/ro.img)"
# Every slot at once: 16 drives (empty), vsock and rng.
drives=""; for i in $(seq 0 15); do drives="$drives --drive id=d$i"; done
"$VMM" --kernel $K --initrd $D/virtio.cpio --serial $T/slots.out $drives --rng \
  --vsock-uds $T/v2.sock --cmdline "console=ttyS0 reboot=k panic=-1 quiet ward.slots" 2>$T/slots.err
echo "slots-rc=$?"
sed 's/^/slots| /' $T/slots.out $T/slots.err
sed 's/^/console| /' $T/vm.out
sed 's/^/vmm! /' $T/vm.err
sed 's/^/serve! /' $T/serve.err
"#;

fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
        .trim()
}

/// `sha256sum` of stdin prints `<hash>  -`.
fn hash(v: &str) -> &str {
    v.split_whitespace().next().unwrap_or("")
}

#[test]
fn nest_virtio_devices_with_linux() {
    let dir = scratch_dir("nest-virtio");
    let probe = vsock_probe(&dir);
    build_initrd_with(&dir, "virtio", GUEST_INIT, &[("vsock-probe", &probe)]);
    let script = dir.join("run.sh");
    std::fs::write(&script, L1_SCRIPT).unwrap();
    let kernel = kernel_path(KernelKind::Guest);
    let vmm = vmm_binary();
    let n = vsock_bytes();
    let opts = Options {
        label: format!("nest-virtio-{}", std::process::id()),
        timeout: Duration::from_secs(1200),
        ..Options::default()
    };
    let out = ward_nest::run(
        &[
            "sh",
            script.to_str().unwrap(),
            vmm.to_str().unwrap(),
            kernel.to_str().unwrap(),
            dir.to_str().unwrap(),
            &n.to_string(),
        ],
        &opts,
    )
    .expect("harness round trip")
    .success()
    .expect("the L1 script");
    let out = out.stdout_str();
    eprintln!("{out}");

    // The VM ran to the API shutdown with every device, under seccomp.
    assert_eq!(field(&out, "vmm-rc="), "0", "{out}");
    assert_eq!(field(&out, "shutdown-http="), "204");

    // virtio-blk, read-write: the guest reads back what it wrote, and the host finds the
    // same bytes in the image file after the VM is gone.
    assert_eq!(field(&out, "console| serial-vda="), "data-serial");
    assert_eq!(field(&out, "console| blk-write-rc="), "0");
    let pattern = hash(field(&out, "host-pattern="));
    assert_eq!(hash(field(&out, "console| blk-read=")), pattern);
    assert_eq!(hash(field(&out, "host-data-after=")), pattern);

    // Read-only: flagged to the guest, writes refused, image untouched.
    assert_eq!(field(&out, "console| ro-flag="), "1");
    assert_ne!(field(&out, "console| ro-write-rc="), "0", "{out}");
    let ro = hash(field(&out, "host-ro-before="));
    assert_eq!(hash(field(&out, "console| ro-read=")), ro);
    assert_eq!(hash(field(&out, "host-ro-after=")), ro);

    // Swap: the empty slot gets an image at run time; the guest sees its size and content.
    assert_eq!(field(&out, "console| spare-size="), "0");
    assert!(field(&out, "swap-http=").starts_with("204"), "{out}");
    assert!(field(&out, "swap-missing=").ends_with("400"), "{out}");
    let after: serde_json::Value = serde_json::from_str(field(&out, "drive-after=")).unwrap();
    assert_eq!(after["capacity_sectors"], 2048, "{after}");
    assert_eq!(
        field(&out, "console| spare-size-after="),
        "2048 spare-serial=swapped"
    );
    assert_eq!(
        hash(field(&out, "console| swapped-read=")),
        hash(field(&out, "host-new="))
    );

    // virtio-rng: /dev/hwrng is the virtio device and gives fresh bytes.
    assert!(
        field(&out, "console| rng-current=").starts_with("virtio_rng"),
        "{out}"
    );
    let rng_a = field(&out, "console| rng-a=");
    assert!(rng_a.ends_with("rng-len=4096"), "{rng_a}");
    assert_ne!(hash(rng_a), hash(field(&out, "console| rng-b=")));

    // virtio-vsock, checksummed both ways, and 64 concurrent echo streams.
    for key in [
        "console| g2h-put=",
        "console| g2h-get=",
        "console| g2h-many=",
        "h2g-put=",
        "h2g-get=",
        "h2g-many=",
    ] {
        assert!(field(&out, key).contains(" ok "), "{key} {out}");
    }
    assert!(field(&out, "h2g-many=").contains("conns=64 ok"));

    // The largest machine: 16 drive slots plus vsock and rng, all probed by the guest.
    assert_eq!(field(&out, "slots-rc="), "0", "{out}");
    assert_eq!(
        field(&out, "slots| slots-vd="),
        "16 vsock=1 rng=virtio_rng.0",
        "{out}"
    );

    // Per-device counters.
    let m: serde_json::Value = serde_json::from_str(field(&out, "metrics=")).unwrap();
    let dev = &m["devices"];
    assert!(
        dev["drives"]["data"]["write_bytes"].as_u64().unwrap() >= 4 << 20,
        "{m}"
    );
    assert!(
        dev["drives"]["data"]["read_bytes"].as_u64().unwrap() >= 4 << 20,
        "{m}"
    );
    assert_eq!(dev["drives"]["ro"]["write_bytes"], 0, "{m}");
    assert!(
        dev["drives"]["spare"]["read_bytes"].as_u64().unwrap() >= 1 << 20,
        "{m}"
    );
    assert!(
        dev["rng"]["read_bytes"].as_u64().unwrap() >= 3 * 4096,
        "{m}"
    );
    assert!(
        dev["vsock"]["write_bytes"].as_u64().unwrap() >= 2 * n,
        "{m}"
    );
    assert!(dev["vsock"]["read_bytes"].as_u64().unwrap() >= 2 * n, "{m}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Device configuration errors are exit 2 and name the drive, path or value, before KVM is
/// needed (run where /dev/kvm does not exist) — except opening a drive image or binding
/// the vsock socket, which happen once the VM exists and are still exit 2.
#[test]
fn virtio_config_errors_are_exit_2() {
    if !require("virtio_config_errors_are_exit_2", &[Need::Root]) {
        return;
    }
    let kernel = kernel_path(KernelKind::Guest);
    let k = kernel.to_str().unwrap();
    let cases: [(&[&str], &str); 6] = [
        (
            &["--kernel", k, "--drive", "id=a,path=/nonexistent/a.img"],
            "drive /nonexistent/a.img: No such file or directory",
        ),
        (
            &["--kernel", k, "--drive", "id=a", "--drive", "id=a"],
            "drive id \"a\"",
        ),
        (
            &["--kernel", k, "--drive", "id=a,rw"],
            "cannot parse \"rw\"",
        ),
        (
            &[
                "--kernel",
                k,
                "--drive",
                "id=a,serial=abcdefghijklmnopqrstuvwxyz",
            ],
            "drive a: serial \"abcdefghijklmnopqrstuvwxyz\" is longer than 20 bytes",
        ),
        (
            &[
                "--kernel",
                k,
                "--vsock-uds",
                "/tmp/v.sock",
                "--vsock-cid",
                "2",
            ],
            "vsock guest_cid = 2",
        ),
        (
            &["--kernel", k, "--vsock-uds", "/nonexistent/v.sock"],
            "directory /nonexistent does not exist",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = vmm_without_kvm(args);
        assert_eq!(code, 2, "ward-vmm {args:?}: {stderr}");
        assert!(stderr.contains(want), "ward-vmm {args:?}: {stderr}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("--drive=id=d{i}")).collect();
    let mut args = vec!["--kernel", k];
    args.extend(many.iter().map(String::as_str));
    let (code, stderr) = vmm_without_kvm(&args);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("17 drives: a microVM has at most 16"),
        "{stderr}"
    );
}

/// On any /dev/kvm (no guest runs): the configured devices take slots in order — drives,
/// then vsock, then rng — and each is on the kernel command line.
#[test]
fn virtio_devices_take_slots_in_config_order() {
    if !require("virtio_devices_take_slots_in_config_order", &[Need::Kvm]) {
        return;
    }
    let dir = scratch_dir("virtio-slots");
    let img = dir.join("a.img");
    std::fs::write(&img, vec![0u8; 4096]).unwrap();
    let mut config = ward_vmm::VmConfig::new(kernel_path(KernelKind::Guest));
    config.cmdline = Some("console=ttyS0".into());
    config.drives = vec![
        ward_vmm::config::DriveConfig {
            id: "a".into(),
            path: Some(img.clone()),
            ..Default::default()
        },
        ward_vmm::config::DriveConfig {
            id: "empty".into(),
            read_only: true,
            ..Default::default()
        },
    ];
    config.vsock = Some(ward_vmm::config::VsockConfig {
        guest_cid: 3,
        uds_path: dir.join("v.sock"),
    });
    config.rng = true;
    let vmm = ward_vmm::Vmm::new(config).unwrap();
    assert_eq!(
        vmm.cmdline(),
        "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 \
         virtio_mmio.device=4K@0xd0002000:7 virtio_mmio.device=4K@0xd0003000:8"
    );
    let devices = vmm.handles().devices;
    let ids: Vec<_> = devices.drives.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["a", "empty"]);
    let info = devices.drive_info(devices.drive("a").unwrap());
    assert_eq!((info.capacity_sectors, info.gsi), (8, 5));
    // The vsock socket is bound as soon as the VM is built, so a host can connect early.
    assert!(dir.join("v.sock").exists());
    drop(vmm);
    let _ = std::fs::remove_dir_all(dir);
}

/// The benchmark guest: sequential and random O_DIRECT reads of `/dev/vda`, then (when the
/// VMM has vsock) guest-initiated streams both ways.
const BENCH_INIT: &str = r#"
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
P=/bin/vsock-probe
echo "BENCH $($P read-seq /dev/vda 2>&1)"
echo "BENCH $($P read-rand /dev/vda 4000 2>&1)"
if ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport | grep -q virtio; then
  echo "BENCH vsock-g2h $($P client-vsock 2 6000 PUT 100000000 2>&1)"
  echo "BENCH vsock-h2g $($P client-vsock 2 6000 GET 100000000 2>&1)"
fi
reboot -f
"#;

/// L1: a 256 MiB image, then ward-vmm and QEMU `-M microvm` (KVM, same kernel, initrd and
/// image) in alternating rounds.
const BENCH_SCRIPT: &str = r#"
set -u
VMM=$1; K=$2; D=$3; ROUNDS=$4
P=$D/vsock-probe
T=/tmp
$P pattern 268435456 >$T/bench.img
$P serve-unix $T/v.sock_6000 2>/dev/null &
for r in $(seq 1 $ROUNDS); do
  WARD_VMM_QUIET=1 "$VMM" --kernel $K --initrd $D/bench.cpio --mem-mib 256 --serial stdout \
    --cmdline "console=ttyS0 reboot=k panic=-1 quiet" \
    --drive id=bench,path=$T/bench.img,ro --vsock-uds $T/v.sock 2>&1 | sed -n "s/^BENCH /ward-vmm $r /p"
  qemu-system-x86_64 -M microvm,x-option-roms=off,rtc=off,acpi=off -accel kvm -cpu host \
    -smp 1 -m 256 -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
    -kernel $K -initrd $D/bench.cpio -append "console=ttyS0 reboot=t panic=-1 quiet" \
    -drive id=d0,file=$T/bench.img,format=raw,if=none,readonly=on \
    -device virtio-blk-device,drive=d0 2>&1 | sed -n "s/^BENCH /qemu-microvm $r /p"
done
"#;

/// ward-vmm's virtio-blk and vsock against QEMU `-M microvm` in one harness run (numbers in
/// `docs/benchmarks.md`, `## virtio`). QEMU has no vhost-less vsock (and L1 has no
/// vhost-vsock), so vsock is measured for ward-vmm alone. `WARD_BENCH_VMM` picks the
/// ward-vmm binary (the release build for numbers worth quoting).
#[test]
fn nest_virtio_benchmark_against_qemu_microvm() {
    let dir = scratch_dir("nest-virtio-bench");
    let probe = vsock_probe(&dir);
    build_initrd_with(&dir, "bench", BENCH_INIT, &[("vsock-probe", &probe)]);
    let script = dir.join("bench.sh");
    std::fs::write(&script, BENCH_SCRIPT).unwrap();
    let vmm = std::env::var_os("WARD_BENCH_VMM").map_or_else(vmm_binary, Into::into);
    let kernel = kernel_path(KernelKind::Guest);
    let opts = Options {
        label: format!("nest-virtio-bench-{}", std::process::id()),
        timeout: Duration::from_secs(1200),
        ..Options::default()
    };
    let out = ward_nest::run(
        &[
            "sh",
            script.to_str().unwrap(),
            vmm.to_str().unwrap(),
            kernel.to_str().unwrap(),
            dir.to_str().unwrap(),
            "3",
        ],
        &opts,
    )
    .expect("harness round trip")
    .success()
    .expect("the L1 script");
    let out = out.stdout_str();
    eprintln!("{out}");
    for vmm in ["ward-vmm", "qemu-microvm"] {
        let rows: Vec<&str> = out.lines().filter(|l| l.starts_with(vmm)).collect();
        let seq = rows
            .iter()
            .filter(|l| l.contains("seq-read bytes=268435456"))
            .count();
        let rand = rows
            .iter()
            .filter(|l| l.contains("rand-read count=4000"))
            .count();
        assert_eq!((seq, rand), (3, 3), "{vmm}: {out}");
    }
    let vsock = out
        .lines()
        .filter(|l| l.starts_with("ward-vmm") && l.contains("vsock-") && l.contains(" ok "))
        .count();
    assert_eq!(vsock, 6, "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
