//! What a server says about failing `accept` calls, rate-limited. While the process is out of
//! file descriptors, `accept` fails each time the accept loop tries again (every 100 ms in
//! `policy serve` and `strip-proxy`), for as long as that lasts: one line per failure would
//! be ten lines a second. [`AcceptLog`] turns the failures into a few reports: the first
//! failure, then at most one report per interval counting the failures since the last one
//! (with the last error), and one when `accept` works again: at the next accepted
//! connection, or, on a server no client is connecting to, once `accept` has not failed for
//! [`ACCEPT_QUIET`] (the caller's timer calls [`AcceptLog::tick`] at
//! [`AcceptLog::next_tick`]; a failure that comes [`ACCEPT_QUIET`] or more after the last one
//! closes the old run itself, should the timer's tick not have been handled first). It does
//! no I/O and reads no clock: the caller passes the time of each call.

use std::fmt;
use std::time::{Duration, Instant};

/// While `accept` keeps failing, at most one report per this interval (after the first).
pub const ACCEPT_REPORT_INTERVAL: Duration = Duration::from_secs(60);

/// A run of failures that has seen no failure for this long is over: the accept loop retries
/// every 100 ms while `accept` fails, so a second without one means `accept` is waiting for
/// clients, which is `accept` working. Failures further apart than this are separate runs.
pub const ACCEPT_QUIET: Duration = Duration::from_secs(1);

/// Something to report about `accept`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptReport {
    /// `accept` failed, the first time since it last worked (or since the server started).
    Failed { message: String },
    /// `accept` is still failing: `failures` more times since the last report, the last of
    /// them with `message`.
    StillFailing { failures: u64, message: String },
    /// `accept` worked again after failing `failures` times in a row over `lasted` (from the
    /// first failure to the first success, or to the last failure when it was seen to work
    /// by [`AcceptLog::tick`]); `unreported` of them came after the last report.
    Recovered {
        failures: u64,
        unreported: u64,
        lasted: Duration,
    },
}

impl fmt::Display for AcceptReport {
    /// The log line: `accept failed: Too many open files (os error 24)`, `accept still
    /// failing: 600 more failures since the last line, the last: …`, `accept works again
    /// after 612 failures in 61.2 s (11 since the last line)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptReport::Failed { message } => write!(f, "accept failed: {message}"),
            AcceptReport::StillFailing { failures, message } => write!(
                f,
                "accept still failing: {failures} more failure{} since the last line, the \
                 last: {message}",
                plural(*failures)
            ),
            AcceptReport::Recovered {
                failures,
                unreported,
                lasted,
            } => {
                write!(
                    f,
                    "accept works again after {failures} failure{} in {:.1} s",
                    plural(*failures),
                    lasted.as_secs_f64()
                )?;
                if *unreported > 0 {
                    write!(f, " ({unreported} since the last line)")?;
                }
                Ok(())
            }
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A run of failed accepts.
#[derive(Debug, Clone)]
struct Episode {
    first: Instant,
    last_failure: Instant,
    failures: u64,
    last_report: Instant,
    /// Failures after the last report.
    unreported: u64,
    last_message: String,
}

/// Turns `accept` results into rate-limited [`AcceptReport`]s (see the module docs).
#[derive(Debug, Clone)]
pub struct AcceptLog {
    interval: Duration,
    quiet: Duration,
    failing: Option<Episode>,
}

impl Default for AcceptLog {
    fn default() -> Self {
        Self::new(ACCEPT_REPORT_INTERVAL)
    }
}

impl AcceptLog {
    /// Reports at most once per `interval` while `accept` keeps failing; a run of failures
    /// ends after [`ACCEPT_QUIET`] without one.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            quiet: ACCEPT_QUIET,
            failing: None,
        }
    }

    /// `accept` failed at `now` with `message`: what to report, in order, if anything. When
    /// the last failure was [`ACCEPT_QUIET`] or more before `now`, its run is over (as
    /// [`AcceptLog::tick`] would have said, had the caller's timer been handled first): its
    /// [`AcceptReport::Recovered`] comes first, then this failure's
    /// [`AcceptReport::Failed`], the first of a new run.
    pub fn failed(
        &mut self,
        now: Instant,
        message: String,
    ) -> impl Iterator<Item = AcceptReport> + use<> {
        let recovered = self.tick(now);
        let report = self.failed_in_run(now, message);
        [recovered, report].into_iter().flatten()
    }

    /// A failure at `now` in the current run (or the first of one): what to report, if anything.
    fn failed_in_run(&mut self, now: Instant, message: String) -> Option<AcceptReport> {
        let Some(e) = &mut self.failing else {
            self.failing = Some(Episode {
                first: now,
                last_failure: now,
                failures: 1,
                last_report: now,
                unreported: 0,
                last_message: String::new(),
            });
            return Some(AcceptReport::Failed { message });
        };
        e.failures = e.failures.saturating_add(1);
        e.unreported = e.unreported.saturating_add(1);
        e.last_failure = now;
        e.last_message = message;
        if now.saturating_duration_since(e.last_report) < self.interval {
            return None;
        }
        e.last_report = now;
        let failures = std::mem::take(&mut e.unreported);
        Some(AcceptReport::StillFailing {
            failures,
            message: std::mem::take(&mut e.last_message),
        })
    }

    /// `accept` worked at `now`: a report when it had been failing.
    pub fn accepted(&mut self, now: Instant) -> Option<AcceptReport> {
        let e = self.failing.take()?;
        Some(AcceptReport::Recovered {
            failures: e.failures,
            unreported: e.unreported,
            lasted: now.saturating_duration_since(e.first),
        })
    }

    /// When to call [`AcceptLog::tick`] next: [`ACCEPT_QUIET`] after the last failure, while
    /// `accept` is failing; `None` while it works.
    pub fn next_tick(&self) -> Option<Instant> {
        let e = self.failing.as_ref()?;
        Some(
            e.last_failure
                .checked_add(self.quiet)
                .unwrap_or(e.last_failure),
        )
    }

    /// The caller's timer at `now` (see [`AcceptLog::next_tick`]): once `accept` has not failed
    /// for [`ACCEPT_QUIET`], the run of failures is over, and [`AcceptReport::Recovered`] says
    /// so with the failures not reported yet, without waiting for a client to connect.
    pub fn tick(&mut self, now: Instant) -> Option<AcceptReport> {
        let e = self.failing.as_ref()?;
        if now.saturating_duration_since(e.last_failure) < self.quiet {
            return None;
        }
        let e = self.failing.take()?;
        Some(AcceptReport::Recovered {
            failures: e.failures,
            unreported: e.unreported,
            lasted: e.last_failure.saturating_duration_since(e.first),
        })
    }

    /// The server stops: the failures not reported yet, if `accept` was failing.
    pub fn finish(&mut self) -> Option<AcceptReport> {
        let e = self.failing.take()?;
        (e.unreported > 0).then_some(AcceptReport::StillFailing {
            failures: e.unreported,
            message: e.last_message,
        })
    }

    /// Whether `accept` failed last.
    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }
}

/// The accept loops' timer for [`AcceptLog::tick`]: completes at `deadline`
/// ([`AcceptLog::next_tick`]), never without one. Outside [`AcceptLog`], which reads no clock.
pub(crate) async fn timer(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMFILE: &str = "Too many open files (os error 24)";

    #[test]
    fn a_long_run_of_failures_gives_a_line_a_minute() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut log = AcceptLog::new(Duration::from_secs(60));
        assert_eq!(
            log.accepted(at(0)),
            None,
            "nothing to say while accept works"
        );
        let mut reports = Vec::new();
        // A failure every 100 ms for 130 s (1300 failures), then accept works again.
        for k in 0..1300 {
            for r in log.failed(at(1000 + k * 100), EMFILE.to_owned()) {
                reports.push((k, r));
            }
        }
        assert!(log.is_failing());
        let recovered = log.accepted(at(1000 + 1300 * 100)).unwrap();
        assert!(!log.is_failing());
        let still = |failures| AcceptReport::StillFailing {
            failures,
            message: EMFILE.to_owned(),
        };
        assert_eq!(
            reports,
            [
                (
                    0,
                    AcceptReport::Failed {
                        message: EMFILE.to_owned()
                    }
                ),
                // 60 s after the first line, counting the 600 failures since it.
                (600, still(600)),
                (1200, still(600)),
            ]
        );
        assert_eq!(
            recovered,
            AcceptReport::Recovered {
                failures: 1300,
                unreported: 99,
                lasted: Duration::from_secs(130),
            }
        );
        // Every failure is counted once: the first, those in the lines, the rest at the end.
        let in_lines: u64 = reports
            .iter()
            .map(|(_, r)| match r {
                AcceptReport::Failed { .. } => 1,
                AcceptReport::StillFailing { failures, .. } => *failures,
                other => panic!("{other:?}"),
            })
            .sum();
        let AcceptReport::Recovered {
            failures,
            unreported,
            ..
        } = recovered
        else {
            unreachable!()
        };
        assert_eq!(in_lines + unreported, failures);
        assert_eq!(log.accepted(at(200_000)), None, "said once");
    }

    /// What one failure says, in order.
    fn said(reports: impl Iterator<Item = AcceptReport>) -> Vec<AcceptReport> {
        reports.collect()
    }

    #[test]
    fn each_run_of_failures_starts_with_its_first_error() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut log = AcceptLog::new(Duration::from_millis(500));
        assert!(matches!(
            said(log.failed(at(0), "one".into()))[..],
            [AcceptReport::Failed { .. }]
        ));
        assert_eq!(said(log.failed(at(100), "two".into())), []);
        assert_eq!(
            log.accepted(at(200)),
            Some(AcceptReport::Recovered {
                failures: 2,
                unreported: 1,
                lasted: Duration::from_millis(200),
            })
        );
        // A new run, close behind: its first failure is reported at once.
        assert_eq!(
            said(log.failed(at(300), "three".into())),
            [AcceptReport::Failed {
                message: "three".into()
            }]
        );
        // The line after the interval names the last error.
        assert_eq!(said(log.failed(at(400), "four".into())), []);
        assert_eq!(
            said(log.failed(at(900), "five".into())),
            [AcceptReport::StillFailing {
                failures: 2,
                message: "five".into()
            }]
        );
        // Stopping while failing reports what no line counted yet, once.
        assert_eq!(said(log.failed(at(1_000), "six".into())), []);
        assert_eq!(
            log.finish(),
            Some(AcceptReport::StillFailing {
                failures: 1,
                message: "six".into()
            })
        );
        assert_eq!(log.finish(), None);
        // Nothing left unreported: nothing to say on stopping.
        assert_eq!(said(log.failed(at(2_000), "seven".into())).len(), 1);
        assert_eq!(log.finish(), None);
    }

    /// A failure [`ACCEPT_QUIET`] or more after the last one starts a new run even when the
    /// timer's tick, due at the same time, was not handled first: the old run's end is said,
    /// then the new run's first failure, not one run merged from both.
    #[test]
    fn a_failure_after_a_quiet_second_closes_the_run_before_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut log = AcceptLog::new(Duration::from_secs(60));
        // (when, message, what is said)
        let cases = [
            (
                0,
                "one",
                vec![AcceptReport::Failed {
                    message: "one".into(),
                }],
            ),
            (100, "two", vec![]),
            // 999 ms after the last failure: the same run.
            (1_099, "three", vec![]),
            // 1 s after it, with the tick (due at 2_099) not handled: a new run.
            (
                2_099,
                "four",
                vec![
                    AcceptReport::Recovered {
                        failures: 3,
                        unreported: 2,
                        lasted: Duration::from_millis(1_099),
                    },
                    AcceptReport::Failed {
                        message: "four".into(),
                    },
                ],
            ),
            (2_199, "five", vec![]),
        ];
        for (ms, message, want) in cases {
            assert_eq!(said(log.failed(at(ms), message.into())), want, "{message}");
        }
        // The new run is the one the tick and the next accept speak of.
        assert_eq!(log.next_tick(), Some(at(2_199) + ACCEPT_QUIET));
        assert_eq!(
            log.accepted(at(2_300)),
            Some(AcceptReport::Recovered {
                failures: 2,
                unreported: 1,
                lasted: Duration::from_millis(201),
            })
        );
    }

    /// On a server no client connects to, the end of a run of failures is reported by the
    /// caller's timer once `accept` has not failed for [`ACCEPT_QUIET`], with the failures no
    /// line counted yet; a client connecting later adds nothing.
    #[test]
    fn the_timer_reports_the_end_of_a_run_without_a_client() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut log = AcceptLog::new(Duration::from_secs(60));
        assert_eq!(log.next_tick(), None, "no timer while accept works");
        assert_eq!(log.tick(at(0)), None);
        // Failures every 100 ms for 2.5 s, a tick after each (none is due yet).
        let mut reports = Vec::new();
        for k in 0..25 {
            let now = at(k * 100);
            reports.extend(log.failed(now, EMFILE.to_owned()));
            assert_eq!(log.next_tick(), Some(now + ACCEPT_QUIET));
            reports.extend(log.tick(now + Duration::from_millis(50)));
        }
        assert_eq!(
            reports,
            [AcceptReport::Failed {
                message: EMFILE.to_owned()
            }]
        );
        // The last failure was at 2.4 s: not over at 3.3 s, over at 3.4 s.
        assert_eq!(log.tick(at(3_399)), None);
        assert!(log.is_failing());
        assert_eq!(
            log.tick(at(3_400)),
            Some(AcceptReport::Recovered {
                failures: 25,
                unreported: 24,
                lasted: Duration::from_millis(2_400),
            })
        );
        assert!(!log.is_failing());
        assert_eq!(log.next_tick(), None);
        assert_eq!(log.tick(at(4_000)), None, "said once");
        assert_eq!(log.accepted(at(600_000)), None, "said once");
        assert_eq!(log.finish(), None);
        // A long run: the minute's line, then the timer's line counts only what came after.
        let mut reports = Vec::new();
        for k in 0..700 {
            reports.extend(log.failed(at(700_000 + k * 100), EMFILE.to_owned()));
        }
        reports.extend(log.tick(at(700_000 + 699 * 100 + 1_000)));
        assert_eq!(
            reports,
            [
                AcceptReport::Failed {
                    message: EMFILE.to_owned()
                },
                AcceptReport::StillFailing {
                    failures: 600,
                    message: EMFILE.to_owned()
                },
                AcceptReport::Recovered {
                    failures: 700,
                    unreported: 99,
                    lasted: Duration::from_millis(69_900),
                },
            ]
        );
    }

    /// A client accepted before the timer's tick reports the end of the run; the tick then has
    /// nothing to add.
    #[test]
    fn an_accept_before_the_tick_reports_it_once() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut log = AcceptLog::new(Duration::from_secs(60));
        assert_eq!(said(log.failed(at(0), EMFILE.to_owned())).len(), 1);
        assert_eq!(said(log.failed(at(100), EMFILE.to_owned())), []);
        assert_eq!(
            log.accepted(at(150)),
            Some(AcceptReport::Recovered {
                failures: 2,
                unreported: 1,
                lasted: Duration::from_millis(150),
            })
        );
        assert_eq!(log.tick(at(5_000)), None);
    }

    #[test]
    fn lines() {
        let cases = [
            (
                AcceptReport::Failed {
                    message: EMFILE.into(),
                },
                "accept failed: Too many open files (os error 24)",
            ),
            (
                AcceptReport::StillFailing {
                    failures: 598,
                    message: EMFILE.into(),
                },
                "accept still failing: 598 more failures since the last line, the last: Too \
                 many open files (os error 24)",
            ),
            (
                AcceptReport::Recovered {
                    failures: 612,
                    unreported: 13,
                    lasted: Duration::from_millis(61_340),
                },
                "accept works again after 612 failures in 61.3 s (13 since the last line)",
            ),
            (
                AcceptReport::Recovered {
                    failures: 1,
                    unreported: 0,
                    lasted: Duration::ZERO,
                },
                "accept works again after 1 failure in 0.0 s",
            ),
            (
                AcceptReport::Recovered {
                    failures: 11,
                    unreported: 10,
                    lasted: Duration::from_millis(1_050),
                },
                "accept works again after 11 failures in 1.1 s (10 since the last line)",
            ),
        ];
        for (report, want) in cases {
            assert_eq!(report.to_string(), want);
        }
    }
}
