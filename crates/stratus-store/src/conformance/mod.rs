//! One suite of store tests that every backend runs: a backend's tests
//! call [`conformance_suite!`](crate::conformance_suite) with a
//! [`Fixture`] of its own, and get one test per case.

pub mod alerts;
pub mod apps;
pub mod builds;
pub mod credentials;
pub mod documents;
pub mod events;
pub mod failures;
pub mod objects;
pub mod queues;
pub mod transfer;
pub mod users;

use std::sync::Arc;

use async_trait::async_trait;

use crate::Store;

/// A store under test, new and empty for each case.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// Opens the store. Every call opens the same state again, as a server
    /// that restarts would.
    async fn open(&self) -> Arc<dyn Store>;

    /// Another store of the same backend, new and empty, kept as long as
    /// the fixture (the target of a move).
    async fn other(&self) -> Arc<dyn Store>;
}

/// One `#[tokio::test]` per case of the suite, each on the [`Fixture`] the
/// expression (a future) gives.
#[macro_export]
macro_rules! conformance_suite {
    ($fixture:expr) => {
        $crate::conformance_suite!(@cases $fixture;
            apps::meta_values_are_set_once_each,
            apps::versions_are_numbered_and_activated_atomically,
            apps::an_earlier_version_is_made_active_again,
            apps::logs_are_queried_followed_and_trimmed,
            apps::backlogs_count_each_app_s_events_and_messages_in_bytes,
            apps::nodes_report_by_heartbeat,
            apps::a_lease_has_one_holder_at_a_time,
            apps::a_version_s_layers_are_kept_and_moved,
            builds::builds_are_put_replaced_listed_trimmed_and_removed_with_their_app,
            credentials::credentials_are_kept_with_their_secret_and_listed_per_app,
            credentials::a_credential_is_revoked_only_by_its_own_app,
            credentials::deleting_an_app_deletes_its_credentials,
            credentials::secrets_are_set_replaced_listed_and_deleted,
            failures::failures_are_kept_listed_trimmed_and_removed_with_their_app,
            alerts::alert_states_and_changes_are_kept_trimmed_and_removed_with_their_app,
            objects::bucket_names_are_unique_across_apps,
            objects::objects_are_put_replaced_and_listed_in_byte_order,
            objects::objects_and_their_events_commit_together,
            objects::a_bucket_is_deleted_when_empty_or_by_force,
            objects::object_usage_counts_buckets_objects_and_bytes_per_app,
            objects::deleting_an_app_removes_its_buckets_and_objects,
            objects::an_upload_keeps_its_parts_until_it_is_aborted,
            objects::uploads_are_listed_by_key_then_id_in_byte_order,
            objects::completing_an_upload_replaces_its_object_and_queues_its_events,
            objects::a_bucket_takes_its_uploads_with_it,
            objects::deleting_an_app_removes_its_uploads,
            objects::racing_writers_settle_each_upload_once,
            events::delivered_events_leave_the_queue,
            events::claims_respect_not_before_and_leases,
            events::claims_pass_over_busy_functions,
            events::failed_events_are_retried_then_dead_lettered_and_redriven,
            events::settlements_queue_their_destinations_atomically,
            events::enqueueing_is_idempotent_while_the_event_is_queued,
            events::deleting_an_app_removes_its_events_and_dead_letters,
            events::accepted_events_survive_reopening,
            events::a_restarted_node_releases_the_leases_of_its_last_run,
            events::a_claimer_extends_the_leases_it_still_holds,
            queues::messages_are_received_in_batches_hidden_and_settled,
            queues::a_destination_can_be_a_queue,
            queues::a_schedule_slot_fires_once,
            queues::a_unit_of_work_commits_events_and_messages_together,
            transfer::a_store_moves_into_an_empty_one_whole,
            documents::filters_select_by_kind_as_the_reference_does,
            documents::nested_paths_and_odd_names_are_fields,
            documents::contains_agrees_with_and_without_a_multi_index,
            documents::sorts_on_several_fields_and_pages_through_them,
            documents::sorting_across_kinds_pages_each_document_once,
            documents::random_queries_agree_with_the_reference,
            documents::aggregations_count_sum_and_average_numbers,
            documents::every_write_and_update_operator_applies,
            documents::if_version_guards_each_write,
            documents::a_write_s_check_decides_before_anything_commits,
            documents::events_commit_with_the_changes,
            documents::racing_creates_of_one_id_have_one_winner,
            documents::concurrent_increments_all_apply,
            documents::change_records_follow_commits_in_order,
            documents::indexes_are_set_listed_and_dropped,
            documents::a_collection_is_listed_and_deleted_whole,
            documents::deleting_an_app_removes_its_documents,
            documents::documents_survive_a_reopen,
            users::users_are_created_read_listed_and_updated,
            users::uids_and_emails_are_unique_per_app,
            users::racing_creates_of_one_email_have_one_winner,
            users::an_update_cannot_take_another_user_s_email,
            users::a_session_rotates_once_and_not_after_it_expired,
            users::revoking_ends_every_session_of_one_user,
            users::deleting_a_user_ends_its_sessions,
            users::expired_sessions_are_trimmed,
            users::deleting_an_app_removes_its_users_and_sessions,
            users::users_and_sessions_survive_a_reopen,
        );
    };
    (@cases $fixture:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let fixture = $fixture.await;
                $crate::conformance::$module::$case(&fixture).await;
            }
        )*
    };
}
