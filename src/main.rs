fn main() -> std::process::ExitCode {
    hookbus::cli::main()
}
