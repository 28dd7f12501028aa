mod cli;

#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::run()
}

/// mimalloc commits its arenas' memory eagerly on Linux (which overcommits), and such an
/// arena's freed pages stay in the RSS: 33 % more peak RSS on a SYN scan of a million
/// connections with 50,000 tracked (64 MiB against 48), 20 % more on 500,000 interleaved
/// connections with two threads, and no faster. The default must be set before mimalloc
/// maps its first arena, which happens before `main`; `MIMALLOC_ARENA_EAGER_COMMIT` in the
/// environment still wins.
#[cfg(target_os = "linux")]
extern "C" fn commit_memory_when_used() {
    /// `mi_option_arena_eager_commit` in mimalloc.h (v3).
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: writes a default into mimalloc's table of options, which nothing reads yet.
    unsafe { libmimalloc_sys::mi_option_set_default(ARENA_EAGER_COMMIT, 0) };
}

/// A prioritised constructor runs before the unprioritised ones, mimalloc's among them
/// (built by gcc), and before any allocation: the default above is in place when mimalloc
/// reads its options from the environment.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array.00101")]
static SET_ALLOCATOR_DEFAULTS: extern "C" fn() = commit_memory_when_used;
