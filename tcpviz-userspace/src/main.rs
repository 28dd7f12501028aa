fn main() {
    println!("{}", tcpviz::ebpf::object().map_or(0, |o| o.len()));
}
