fn main() {
    eprintln!("odradek-bench: not built yet (see the benchmark issue)");
    std::process::exit(2);
}
