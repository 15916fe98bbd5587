//! The `commandpost` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    commandpost::cli::main()
}
