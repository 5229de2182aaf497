//! Revision-checked reconciliation: finds the lease changes a watch lost.
//!
//! A watch delivers a prefix's changes in revision order, so once the agent
//! has applied every event up to revision `A` (its applied revision) its
//! leases are exactly the store's leases at `A`. A list taken at revision
//! `R` shows that, key by key, without false alarms under any churn:
//! - a lease listed with `mod_revision <= A` was last changed at or before
//!   `A`: the agent must hold that lease with that revision (and value). If
//!   not, the watch lost the event that set it.
//! - a lease listed with `mod_revision > A` has not been delivered yet: no
//!   verdict (a later check decides, once `A` has passed it).
//! - a lease the agent holds but the list lacks was deleted at some revision
//!   in `(held revision, R]`. If `R <= A` the delete is one the watch should
//!   have delivered: it was lost. If `R > A` the delete may still be on its
//!   way: the key becomes a suspect, and a later check that finds it still
//!   held with the same revision once `A` has reached the suspect's `R`
//!   declares the delete lost.
//!
//! Keys whose value cannot be read are present but not compared (the agent
//! keeps their last good route). The functions here do no I/O; the agent
//! lists, calls [`check`] and applies the [`Repair`]s it returns.

use crate::lease::LeaseAttrs;
use crate::store::Revision;
use sluice_api::Ipv4Net;
use std::collections::BTreeMap;

/// What the agent holds: its leases, the revision each was applied at, and
/// the highest revision it has applied.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// The leases by subnet.
    pub leases: &'a BTreeMap<Ipv4Net, LeaseAttrs>,
    /// The `mod_revision` of the event (or list) each held key came from.
    pub revisions: &'a BTreeMap<Ipv4Net, Revision>,
    /// Every event up to this revision has been applied.
    pub applied: Revision,
}

/// A list of the store taken for the check.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The readable leases.
    pub leases: &'a BTreeMap<Ipv4Net, LeaseAttrs>,
    /// The `mod_revision` of every lease key listed, readable or not.
    pub revisions: &'a BTreeMap<Ipv4Net, Revision>,
    /// The list's revision.
    pub revision: Revision,
}

/// A key held but not listed, whose delete may still be on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspect {
    /// The revision the agent holds the key at.
    pub held: Revision,
    /// The earliest list that lacked the key.
    pub absent_at: Revision,
}

/// A change the watch lost, to apply as if it had been delivered.
#[derive(Debug, Clone, PartialEq)]
pub enum Repair {
    /// The lease is `attrs`, set at `revision` (<= the applied revision).
    Put {
        /// The subnet.
        subnet: Ipv4Net,
        /// The lease as listed.
        attrs: LeaseAttrs,
        /// Its `mod_revision`.
        revision: Revision,
    },
    /// The lease is gone: deleted after `held`, at or before the applied
    /// revision.
    Delete {
        /// The subnet.
        subnet: Ipv4Net,
        /// The revision the agent held it at.
        held: Revision,
    },
}

/// The outcome of one check.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    /// Lost changes, to apply.
    pub repairs: Vec<Repair>,
    /// Changes the watch has not delivered yet (listed revisions above the
    /// applied one, or suspects): if the applied revision does not move
    /// before the next check, the watch is stuck.
    pub pending: bool,
}

/// Compares what the agent holds with `list`; `suspects` carries keys
/// whose delete was not yet due from one check to the next.
pub fn check(
    held: Held<'_>,
    list: Snapshot<'_>,
    suspects: &mut BTreeMap<Ipv4Net, Suspect>,
) -> Verdict {
    let a = held.applied;
    let mut v = Verdict::default();
    for (s, &m) in list.revisions {
        if m > a {
            v.pending = true;
            continue;
        }
        let Some(attrs) = list.leases.get(s) else {
            continue; // unreadable: the agent keeps the last good route
        };
        if held.revisions.get(s) != Some(&m) || held.leases.get(s) != Some(attrs) {
            v.repairs.push(Repair::Put {
                subnet: *s,
                attrs: attrs.clone(),
                revision: m,
            });
        }
    }
    let mut next = BTreeMap::new();
    for (s, &h) in held.revisions {
        if list.revisions.contains_key(s) {
            continue;
        }
        // Deleted at some revision in (h, list.revision].
        let absent_at = suspects
            .get(s)
            .filter(|p| p.held == h)
            .map_or(list.revision, |p| p.absent_at.min(list.revision));
        if absent_at <= a {
            v.repairs.push(Repair::Delete {
                subnet: *s,
                held: h,
            });
        } else {
            v.pending = true;
            next.insert(*s, Suspect { held: h, absent_at });
        }
    }
    *suspects = next;
    v
}

/// Whether the watch is stuck: at the last check (`previous`: the applied
/// revision then, and whether changes waited) and now, changes waited, and
/// the applied revision has not moved in between.
pub fn stuck(previous: Option<(Revision, bool)>, applied: Revision, pending: bool) -> bool {
    pending && previous.is_some_and(|(rev, waited)| waited && rev == applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::BackendType;
    use std::net::Ipv4Addr;

    fn net(i: u8) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::new(10, 1, i, 0), 24).unwrap()
    }

    fn attrs(i: u8) -> LeaseAttrs {
        LeaseAttrs::new(
            Ipv4Addr::new(192, 168, 0, i),
            BackendType::Vxlan,
            1,
            sluice_api::MacAddr::from([2, 0, 0, 0, 0, i]),
        )
    }

    /// Leases and revisions from `(subnet, attrs, revision)`.
    type State = (BTreeMap<Ipv4Net, LeaseAttrs>, BTreeMap<Ipv4Net, Revision>);

    fn state(items: &[(u8, u8, Revision)]) -> State {
        let mut l = BTreeMap::new();
        let mut r = BTreeMap::new();
        for &(s, a, rev) in items {
            l.insert(net(s), attrs(a));
            r.insert(net(s), rev);
        }
        (l, r)
    }

    fn run(
        held: &State,
        applied: Revision,
        list: &State,
        at: Revision,
        suspects: &mut BTreeMap<Ipv4Net, Suspect>,
    ) -> Verdict {
        check(
            Held {
                leases: &held.0,
                revisions: &held.1,
                applied,
            },
            Snapshot {
                leases: &list.0,
                revisions: &list.1,
                revision: at,
            },
            suspects,
        )
    }

    #[test]
    fn in_step_is_quiet() {
        let s = state(&[(1, 1, 5), (2, 2, 7)]);
        let mut sus = BTreeMap::new();
        assert_eq!(run(&s, 7, &s, 7, &mut sus), Verdict::default());
        // The store has moved on without touching these keys.
        assert_eq!(run(&s, 7, &s, 900, &mut sus), Verdict::default());
        assert!(sus.is_empty());
    }

    #[test]
    fn changes_not_yet_delivered_are_pending_not_repaired() {
        let held = state(&[(1, 1, 5)]);
        // A put at 9 and a delete of 1 at 10, the agent at 7.
        let list = state(&[(2, 2, 9)]);
        let mut sus = BTreeMap::new();
        let v = run(&held, 7, &list, 10, &mut sus);
        assert!(v.repairs.is_empty());
        assert!(v.pending);
        assert_eq!(
            sus.get(&net(1)),
            Some(&Suspect {
                held: 5,
                absent_at: 10
            })
        );
        // Delivered meanwhile: the agent is at 10 with both applied.
        let held = state(&[(2, 2, 9)]);
        let v = run(&held, 10, &list, 12, &mut sus);
        assert_eq!(v, Verdict::default());
        assert!(sus.is_empty());
    }

    #[test]
    fn a_lost_put_is_repaired() {
        // The agent is at 20 but never saw the put of 2 at 12.
        let held = state(&[(1, 1, 5)]);
        let list = state(&[(1, 1, 5), (2, 2, 12)]);
        let v = run(&held, 20, &list, 25, &mut BTreeMap::new());
        assert_eq!(
            v.repairs,
            [Repair::Put {
                subnet: net(2),
                attrs: attrs(2),
                revision: 12
            }]
        );
        assert!(!v.pending);
    }

    #[test]
    fn a_lost_change_of_value_is_repaired() {
        // 1 was rewritten at 15 with new attributes; the agent has the old.
        let held = state(&[(1, 1, 5)]);
        let list = state(&[(1, 9, 15)]);
        let v = run(&held, 20, &list, 20, &mut BTreeMap::new());
        assert_eq!(
            v.repairs,
            [Repair::Put {
                subnet: net(1),
                attrs: attrs(9),
                revision: 15
            }]
        );
        // Same value, newer revision (a renewal): the revision is taken.
        let list = state(&[(1, 1, 15)]);
        let v = run(&held, 20, &list, 20, &mut BTreeMap::new());
        assert_eq!(v.repairs.len(), 1);
    }

    #[test]
    fn a_lost_delete_is_repaired_at_once_when_the_list_is_not_newer() {
        let held = state(&[(1, 1, 5), (2, 2, 6)]);
        let list = state(&[(2, 2, 6)]);
        let v = run(&held, 30, &list, 30, &mut BTreeMap::new());
        assert_eq!(
            v.repairs,
            [Repair::Delete {
                subnet: net(1),
                held: 5
            }]
        );
    }

    #[test]
    fn a_lost_delete_under_churn_is_repaired_once_the_agent_passes_the_list() {
        // Under churn every list is newer than the agent: the first check
        // only suspects, the next one (agent past 40) decides.
        let held = state(&[(1, 1, 5)]);
        let empty = state(&[]);
        let mut sus = BTreeMap::new();
        let v = run(&held, 30, &empty, 40, &mut sus);
        assert!(v.repairs.is_empty() && v.pending);
        let v = run(&held, 45, &empty, 60, &mut sus);
        assert_eq!(
            v.repairs,
            [Repair::Delete {
                subnet: net(1),
                held: 5
            }]
        );
        assert!(sus.is_empty());
    }

    #[test]
    fn a_suspect_rewritten_meanwhile_starts_over() {
        let mut sus = BTreeMap::new();
        let empty = state(&[]);
        run(&state(&[(1, 1, 5)]), 30, &empty, 40, &mut sus);
        // The agent saw a new put of 1 at 42 (and its delete is on its way).
        let v = run(&state(&[(1, 1, 42)]), 45, &empty, 60, &mut sus);
        assert!(v.repairs.is_empty());
        assert_eq!(
            sus.get(&net(1)),
            Some(&Suspect {
                held: 42,
                absent_at: 60
            })
        );
    }

    #[test]
    fn a_watch_is_stuck_only_when_changes_waited_twice_without_progress() {
        assert!(
            !stuck(None, 10, true),
            "the first check has nothing to compare"
        );
        assert!(stuck(Some((10, true)), 10, true));
        assert!(
            !stuck(Some((10, true)), 11, true),
            "it moved: merely behind"
        );
        assert!(!stuck(Some((10, false)), 10, true), "nothing waited before");
        assert!(!stuck(Some((10, true)), 10, false), "nothing waits now");
    }

    #[test]
    fn unreadable_keys_are_present_but_not_compared() {
        let held = state(&[(1, 1, 5)]);
        // 1 now holds a value that does not parse (listed at 8, no attrs).
        let leases = BTreeMap::new();
        let revisions = BTreeMap::from([(net(1), 8)]);
        let v = run(&held, 10, &(leases, revisions), 10, &mut BTreeMap::new());
        assert_eq!(v, Verdict::default());
    }
}
