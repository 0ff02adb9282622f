//! The quality counts of one store transaction, backend-neutral: both backends count with
//! [`Tally`] and write it at the end of the transaction, one upsert per (hour, ad account,
//! event name) and per message.

use super::{QualityCounts, Settlement};

/// The counter columns of `quality_hours`, in the order of [`counts_to_row`].
pub(crate) const QUALITY_COLUMNS: [&str; 36] = [
    "received",
    "duplicates",
    "merged",
    "seen_api",
    "seen_webhook",
    "seen_poller",
    "seen_collector",
    "seen_tag_mirror",
    "seen_demo",
    "key_em",
    "key_ph",
    "key_external_id",
    "key_click_id",
    "key_ip_ua",
    "key_name",
    "key_address",
    "key_hashed_maids",
    "delivered",
    "failed",
    "dead",
    "retried",
    "waits",
    "warned",
    "late",
    "lag_0",
    "lag_1",
    "lag_2",
    "lag_3",
    "lag_4",
    "lag_5",
    "lag_6",
    "lag_7",
    "lag_8",
    "lag_9",
    "lag_10",
    "lag_11",
];

/// The parts of an upsert into `quality_hours` that both dialects share: the counter
/// columns, their placeholders from `first` on (`sigil` `$` or `?`), and the sums that add
/// the new counts to the row named `target`.
pub(crate) fn hour_upsert_parts(first: usize, sigil: char, target: &str) -> [String; 3] {
    let placeholders: Vec<String> = (first..first + QUALITY_COLUMNS.len() + 1)
        .map(|i| format!("{sigil}{i}"))
        .collect();
    let sums: Vec<String> = QUALITY_COLUMNS
        .iter()
        .map(|c| format!("{c} = {target}.{c} + excluded.{c}"))
        .collect();
    [
        QUALITY_COLUMNS.join(", "),
        placeholders.join(", "),
        sums.join(", "),
    ]
}

/// What a settlement needs to know of the event it settled.
pub(crate) struct Settled {
    pub(crate) ad_account_id: String,
    pub(crate) event_name: String,
    pub(crate) event_id: String,
    pub(crate) received_at_ms: i64,
    pub(crate) event_time: i64,
}

/// Quality counts of one job, written with one UPSERT per (hour, ad account, event name) and
/// per message, instead of one per event: at the end of the job on PostgreSQL, and once per
/// group commit on SQLite (see [`Tally::absorb`]).
#[derive(Default)]
pub(crate) struct Tally {
    /// A job touches few (hour, ad account, event name) groups, so a short list searched in
    /// order is cheaper than hashing, and allocates only for a new group.
    pub(crate) hours: Vec<(i64, String, String, QualityCounts)>,
    pub(crate) messages: std::collections::HashMap<(i64, String, &'static str, String), i64>,
}

impl Tally {
    /// The counts of the hour `received_at_ms` falls in.
    pub(crate) fn hour(
        &mut self,
        account: &str,
        event_name: &str,
        received_at_ms: i64,
    ) -> &mut QualityCounts {
        let hour = received_at_ms.div_euclid(3_600_000) * 3600;
        let found = self
            .hours
            .iter()
            .position(|(h, a, n, _)| *h == hour && a == account && n == event_name);
        let i = match found {
            Some(i) => i,
            None => {
                self.hours.push((
                    hour,
                    account.to_owned(),
                    event_name.to_owned(),
                    QualityCounts::default(),
                ));
                self.hours.len() - 1
            }
        };
        &mut self.hours[i].3
    }

    pub(crate) fn message(
        &mut self,
        account: &str,
        received_at_ms: i64,
        kind: &'static str,
        text: &str,
    ) {
        // Messages quoting input can be long; the start says what happened.
        let text: String = text.chars().take(300).collect();
        let day = received_at_ms.div_euclid(86_400_000) * 86_400;
        *self
            .messages
            .entry((day, account.to_owned(), kind, text))
            .or_default() += 1;
    }

    /// Adds another job's counts to these (the writer sums the jobs of a group commit, so
    /// each (hour, ad account, event name) is written once per commit, not once per job).
    pub(crate) fn absorb(&mut self, other: Tally) {
        for (hour, account, name, counts) in other.hours {
            // `hour` is Unix seconds at the start of the hour, so its millisecond is in it.
            self.hour(&account, &name, hour * 1000).add(&counts);
        }
        for (key, n) in other.messages {
            *self.messages.entry(key).or_default() += n;
        }
    }

    /// Counts one settlement (what it changes on the order ledger is the store's to write).
    pub(crate) fn count_settled(&mut self, e: &Settled, s: &Settlement) {
        let (account, received) = (e.ad_account_id.as_str(), e.received_at_ms);
        match s {
            Settlement::Delivered {
                sent_at_ms,
                warning,
                ..
            } => {
                let counts = self.hour(account, &e.event_name, received);
                counts.delivered += 1;
                counts.count_lag(sent_at_ms.div_euclid(1000) - e.event_time);
                if let Some(w) = warning {
                    counts.warned += 1;
                    self.message(account, received, "warning", w);
                }
            }
            Settlement::Retry { error, counted, .. } => {
                let counts = self.hour(account, &e.event_name, received);
                if *counted {
                    counts.retried += 1;
                    self.message(account, received, "retry", error);
                } else {
                    counts.waits += 1;
                    self.message(account, received, "wait", error);
                }
            }
            Settlement::Dead { reason, .. } => {
                let counts = self.hour(account, &e.event_name, received);
                counts.dead += 1;
                if reason.is_refusal() {
                    counts.failed += 1;
                }
                self.message(account, received, "dead_letter", &reason.to_string());
            }
        }
    }
}

/// The counters in [`QUALITY_COLUMNS`] order.
pub(crate) fn counts_to_row(c: &QualityCounts) -> [i64; QUALITY_COLUMNS.len()] {
    let mut row = [0i64; QUALITY_COLUMNS.len()];
    let head = [c.received, c.duplicates, c.merged];
    let tail = [
        c.delivered,
        c.failed,
        c.dead,
        c.retried,
        c.waits,
        c.warned,
        c.late,
    ];
    let values = head
        .iter()
        .chain(&c.seen)
        .chain(&c.keys)
        .chain(&tail)
        .chain(&c.lag);
    for (slot, v) in row.iter_mut().zip(values) {
        *slot = *v;
    }
    row
}

/// The inverse of [`counts_to_row`].
pub(crate) fn counts_from_row(row: &[i64; QUALITY_COLUMNS.len()], lag_max: i64) -> QualityCounts {
    let mut c = QualityCounts {
        received: row[0],
        duplicates: row[1],
        merged: row[2],
        delivered: row[17],
        failed: row[18],
        dead: row[19],
        retried: row[20],
        waits: row[21],
        warned: row[22],
        late: row[23],
        lag_max,
        ..QualityCounts::default()
    };
    c.seen.copy_from_slice(&row[3..9]);
    c.keys.copy_from_slice(&row[9..17]);
    c.lag.copy_from_slice(&row[24..36]);
    c
}
