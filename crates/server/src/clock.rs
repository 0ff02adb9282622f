//! Time, passed in: [`Clock`] is what every part of the server reads the time from and waits
//! on. `serve` runs on [`SystemClock`]; tests run on a [`ManualClock`] and move time forward
//! instead of waiting for it, so a test of a one-minute call budget takes milliseconds.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A wait on a [`Clock`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The time, and waiting for a time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Unix milliseconds now.
    fn now_ms(&self) -> i64;

    /// Completes once [`Clock::now_ms`] has reached `at_ms`.
    fn sleep_until(&self, at_ms: i64) -> Sleep<'_>;
}

impl dyn Clock {
    /// Completes after `duration` of this clock's time.
    pub fn sleep(&self, duration: Duration) -> Sleep<'_> {
        let at = self.now_ms().saturating_add(duration.as_millis() as i64);
        self.sleep_until(at)
    }
}

/// A clock as the gateway shares it.
pub type SharedClock = Arc<dyn Clock>;

/// The wall clock, with tokio's timers.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock, shared.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        system_now_ms()
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep<'_> {
        let wait = (at_ms - system_now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// Unix milliseconds on the wall clock, for commands that run once (the CLI) and stamps
/// no test needs to control (a migration's time).
pub fn system_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A clock that moves only when told to. Waits complete as soon as the clock is moved past
/// their time, in the task that waits (nothing runs inside [`ManualClock::advance`]).
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<i64>,
}

impl ManualClock {
    /// A clock standing at `now_ms`.
    pub fn new(now_ms: i64) -> Arc<ManualClock> {
        Arc::new(ManualClock {
            now: watch::Sender::new(now_ms),
        })
    }

    /// A clock standing at the wall clock's time now.
    pub fn starting_now() -> Arc<ManualClock> {
        ManualClock::new(system_now_ms())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now
            .send_modify(|t| *t = t.saturating_add(by.as_millis() as i64));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, at_ms: i64) -> Sleep<'_> {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock, which outlives this borrow of it.
            let _ = now.wait_for(|t| *t >= at_ms).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_a_sleeper_only_once_moved_past_its_time() {
        let clock = ManualClock::new(1_000);
        let shared: SharedClock = clock.clone();
        let mut sleep = shared.sleep(Duration::from_secs(60));
        assert!(futures_poll(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(59));
        assert!(futures_poll(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(1));
        assert!(futures_poll(&mut sleep).is_ready());
        assert_eq!(shared.now_ms(), 61_000);
    }

    #[tokio::test]
    async fn the_system_clock_reads_the_wall_clock() {
        let before = system_now_ms();
        let read = SystemClock.now_ms();
        assert!(read >= before && read - before < 60_000);
        SystemClock.sleep_until(read - 1).await;
    }

    fn futures_poll(f: &mut Sleep<'_>) -> std::task::Poll<()> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        f.as_mut().poll(&mut cx)
    }
}
