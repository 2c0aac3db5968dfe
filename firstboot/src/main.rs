fn main() {
    eprintln!("hakube-firstboot: not implemented yet");
    std::process::exit(1);
}
