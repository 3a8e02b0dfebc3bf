//! `ward-vmm`.

fn main() -> std::process::ExitCode {
    eprintln!("ward-vmm: not built yet in this version of ward");
    std::process::ExitCode::from(2)
}
