//! `noop_tc IFACE` (an example of the tcpviz package): attaches the do-nothing TC program of the tcpviz eBPF object to the
//! ingress and egress of IFACE (TCX) and holds it until its standard input closes. The floor
//! `cargo xtask bench-live` measures the agent's programs against; run it inside the
//! interface's namespace (`ip netns exec`).

use std::io::Read;

use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iface = std::env::args().nth(1).ok_or("usage: noop_tc IFACE")?;
    let object = tcpviz::ebpf::object().ok_or("this build has no eBPF programs")?;
    let mut ebpf = aya::EbpfLoader::new().load(object)?;
    let prog: &mut SchedClassifier = ebpf.program_mut("tcpviz_noop").ok_or("no tcpviz_noop program")?.try_into()?;
    prog.load()?;
    let mut links = Vec::new();
    for at in [TcAttachType::Ingress, TcAttachType::Egress] {
        let id = prog.attach_with_options(&iface, at, TcAttachOptions::TcxOrder(LinkOrder::default()))?;
        links.push(prog.take_link(id)?);
    }
    println!("attached");
    // Held until the bench closes our standard input (or kills us: TCX links die with us).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(links);
    Ok(())
}
