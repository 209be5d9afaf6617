"""The payments admin's logins are throttled like every service's (tests/login_throttle.py)."""

from tests.login_throttle import (  # noqa: F401  (pytest collects the imported tests and uses the fixtures)
    _relay_off,
    alice,
    test_a_lockout_is_audited_once_not_for_every_refused_attempt,
    test_a_refused_login_asking_for_json_gets_problem_json_429,
    test_a_successful_login_forgives_only_that_usernames_failures_from_that_address,
    test_an_unlock_by_username_lets_the_right_password_in_at_once_and_is_audited,
    test_an_unlock_of_an_address_from_the_attempts_list_action,
    test_behind_a_proxy_a_forged_forwarded_for_does_not_escape_the_address_lockout,
    test_settings_wire_axes_into_the_admin,
    test_the_client_address_behind_a_given_number_of_proxies,
    test_the_failure_limit_locks_a_username_out_across_addresses_and_the_right_password_is_refused,
    test_the_failure_limit_locks_an_address_out_across_usernames,
    test_the_lockout_ends_when_the_cool_off_has_passed_since_the_last_failure,
    test_the_unlock_form_takes_exactly_one_username_or_one_address,
    test_unlocking_needs_the_permission_to_clear_attempts,
    test_without_a_cool_off_only_an_unlock_ends_the_lockout,
    unlocker,
)
