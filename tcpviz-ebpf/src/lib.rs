#![no_std]
// This library target exists so that tcpviz-userspace can name this crate as a build
// dependency (cargo then rebuilds the programs when their sources change).
