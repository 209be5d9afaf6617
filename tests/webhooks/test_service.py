"""The webhooks service is its own Django project that passes the service contract: its API reference (every
operation documented, examples valid, errors declared) and the URL rule."""

from tests.service_contract import (  # noqa: F401  (pytest collects the imported tests)
    test_admin_login_page_renders_with_its_styles,
    test_api_docs_load_their_assets_from_this_service_not_a_cdn,
    test_declared_errors_are_in_the_schema_with_their_codes,
    test_every_operation_is_documented_for_integrators,
    test_every_view_declares_the_domain_errors_it_can_raise,
    test_metrics_are_prometheus_text,
    test_migrations_match_the_models,
    test_no_docstring_leaks_into_the_schema,
    test_openapi_schema_is_served,
    test_openapi_schema_is_valid_and_documents_every_error_as_a_problem,
    test_openapi_schema_passes_openapi_spec_validator,
    test_readiness_checks_database_and_broker,
    test_unknown_route_is_a_problem_document,
    test_whoami_needs_a_token,
)
from tests.url_rule import (  # noqa: F401  (pytest collects the imported tests)
    test_every_route_is_named_once_and_spelled_without_a_trailing_slash,
    test_no_route_captures_the_literal_path_of_another,
    test_the_slashed_spelling_of_every_route_answers_308_to_it_for_every_method,
)
