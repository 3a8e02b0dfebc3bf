//! `ward-rootfs`.

fn main() -> std::process::ExitCode {
    eprintln!("ward-rootfs: not built yet in this version of ward");
    std::process::ExitCode::from(2)
}
