//! `pincapi bench`: ingest and delivery throughput on this machine, with an HTTP floor.

/// Options of `pincapi bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

/// Runs the benchmark.
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench: not built yet")
}
