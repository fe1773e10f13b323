//! The `deltaswap` command-line tool (feature `cli`).

mod cli;

fn main() {
    std::process::exit(cli::run());
}
