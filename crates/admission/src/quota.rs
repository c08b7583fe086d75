//! Daily quotas per account (`daily_quotas` in the ingest and SMPP server configs): how
//! many messages an account may send per UTC day through a front end. A pure counter
//! with the clock passed in; the HTTP API asks it once per message (a batch of N asks N
//! times) after the message is valid, and answers 429 `quota_exceeded` when it says no;
//! the SMPP server asks it for each valid message and answers `ESME_RTHROTTLED`.
//!
//! Each replica counts the traffic it takes, against its share of the quota
//! (`quota / instances`, rounded down, at least 1), so the replicas together never let
//! an account past its quota. Counts live in memory: a restarted replica starts the day
//! again from zero (at most one more share per restart).

use std::collections::{BTreeMap, HashMap};

/// A day, in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// Messages counted per account, for the current UTC day.
#[derive(Debug, Default)]
pub struct Quotas {
    limits: BTreeMap<String, u64>,
    share_of: u32,
    day: i64,
    used: HashMap<String, u64>,
}

/// A message refused because its account used its quota for the day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    /// The account's whole daily quota.
    pub quota: u64,
    /// When the count starts again (Unix ms, the next 00:00 UTC).
    pub resets_at_ms: i64,
}

impl Quotas {
    /// Quotas for the accounts in `limits`, shared by `instances` replicas (others have
    /// none).
    pub fn new(limits: BTreeMap<String, u64>, instances: u32) -> Self {
        Quotas {
            limits,
            share_of: instances.max(1),
            ..Default::default()
        }
    }

    /// This replica's share of `quota`.
    fn share(&self, quota: u64) -> u64 {
        (quota / u64::from(self.share_of)).max(1)
    }

    /// Counts one message of `account` at `now_ms`, or refuses it.
    pub fn admit(&mut self, account: &str, now_ms: i64) -> Result<(), QuotaExceeded> {
        let Some(&quota) = self.limits.get(account) else {
            return Ok(());
        };
        let day = now_ms.div_euclid(DAY_MS);
        if day != self.day {
            self.day = day;
            self.used.clear();
        }
        let share = self.share(quota);
        let used = self.used.entry(account.to_string()).or_default();
        if *used >= share {
            return Err(QuotaExceeded {
                quota,
                resets_at_ms: (day + 1) * DAY_MS,
            });
        }
        *used += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: i64 = 1_795_000_000_000 - 1_795_000_000_000 % DAY_MS + DAY_MS / 2;

    fn quotas(instances: u32) -> Quotas {
        Quotas::new(BTreeMap::from([("shop".to_string(), 3)]), instances)
    }

    #[test]
    fn given_a_quota_of_three_when_a_fourth_message_comes_the_same_day_then_it_is_refused() {
        let mut q = quotas(1);
        for _ in 0..3 {
            assert!(q.admit("shop", NOON).is_ok());
        }
        let refused = q.admit("shop", NOON + 1_000).unwrap_err();
        assert_eq!(refused.quota, 3);
        assert_eq!(
            refused.resets_at_ms,
            NOON + DAY_MS / 2,
            "the next midnight UTC"
        );
        // Other accounts have no quota.
        assert!(q.admit("bank", NOON).is_ok());
    }

    #[test]
    fn given_a_used_quota_when_the_utc_day_turns_then_it_starts_again() {
        let mut q = quotas(1);
        for _ in 0..3 {
            q.admit("shop", NOON).unwrap();
        }
        assert!(
            q.admit("shop", NOON + DAY_MS / 2 - 1).is_err(),
            "23:59:59.999"
        );
        assert!(
            q.admit("shop", NOON + DAY_MS / 2).is_ok(),
            "00:00 the next day"
        );
    }

    #[test]
    fn given_two_replicas_then_each_admits_its_share_and_together_never_more_than_the_quota() {
        let limits = BTreeMap::from([("shop".to_string(), 5)]);
        let mut replicas = [Quotas::new(limits.clone(), 2), Quotas::new(limits, 2)];
        let admitted: usize = (0..20)
            .filter(|i| replicas[i % 2].admit("shop", NOON).is_ok())
            .count();
        assert_eq!(admitted, 4, "2 + 2 of a quota of 5 (shares round down)");
    }
}
