//! The store contract suite: every case in `cases` runs against the embedded store and against a real etcd
//! (one fresh database file or etcd server per test, so tests run in parallel). `etcd_only` and
//! `embedded_only` cover what only one backend can show: a server outage, several processes on one file.
//!
//! Run: `cargo test -p weft-store --test contract` (needs `etcd` on PATH: apt-get install etcd-server).
mod bad_rows;
mod cases;
mod embedded_only;
mod etcd_only;
mod harness;
mod networks;

/// Generates `embedded::<case>` and `etcd::<case>` tests for each case.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[test]
                fn $case() {
                    let h = crate::harness::Harness::embedded();
                    crate::harness::runtime().block_on(crate::$case(h));
                }
            )*
        }
        mod etcd {
            $(
                #[test]
                fn $case() {
                    let h = crate::harness::Harness::etcd();
                    crate::harness::runtime().block_on(crate::$case(h));
                }
            )*
        }
    };
}

contract!(
    config_first_writer_wins,
    acquire_without_config_fails,
    acquire_is_inside_the_cidr_and_stable_across_restarts,
    hint_is_honoured_when_free,
    fifty_agents_at_once_get_fifty_subnets,
    exhaustion_is_an_error_until_a_subnet_returns,
    renew_keeps_the_lease_and_publishes_attributes,
    unrenewed_lease_expires_and_its_subnet_returns,
    release_frees_now_and_is_idempotent,
    watch_sees_every_change_after_a_listed_revision,
    objects_put_list_delete_watch,
    compaction_resets_old_watchers,
    undecodable_rows_are_skipped_and_named,
    entries_carry_key_and_creation_order,
    a_value_claiming_another_subnet_is_refused,
    networks_round_trip_as_tenant_networks,
    network_watches_see_create_update_delete,
    undecodable_network_rows_are_skipped_by_key,
    object_entries_carry_the_creation_order,
);

use bad_rows::*;
use cases::*;
use networks::*;
