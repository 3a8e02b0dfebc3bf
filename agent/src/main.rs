//! `ward-agent`.

fn main() -> std::process::ExitCode {
    eprintln!("ward-agent: not built yet in this version of ward");
    std::process::ExitCode::from(2)
}
