//! The command line: what a person typing `tripline …` sees.

use crate::support::tripline::{run_cli, Tripline};

const CONFIG: &str = "sources: [{type: http, name: hook, path: /hook}]\nsubmit: {type: outbox, dir: outbox/}\nsensors: sensors/\n";

fn sensor(expr: &str, value: &str) -> String {
    format!(
        r#"apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {{name: s}}
spec:
  dependencies:
    - name: d
      source: hook
      filters: {{expr: '{expr}'}}
  triggers:
    - name: t
      parameters:
        - {{name: b, value: "{value}", dest: data.a}}
      workflow:
        manifest: {{apiVersion: v1, kind: ConfigMap, metadata: {{generateName: x-}}, data: {{a: x}}}}
"#
    )
}

#[test]
fn unknown_cel_functions_and_helpers_fail_validate_once_each() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sensors")).unwrap();
    std::fs::write(dir.path().join("tripline.yaml"), CONFIG).unwrap();
    let file = dir.path().join("sensors/s.yaml");

    std::fs::write(
        &file,
        sensor(r#"body.ref.startswith("refs/")"#, "{{truncate body.ref 3}}"),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["validate"], dir.path());
    assert_eq!(code, 2, "{err}");
    let cel = "spec.dependencies[0].filters.expr: bad CEL expression: unknown function `startswith` (did you mean `startsWith`?)";
    let helper = "spec.triggers[0].parameters[0].value: template: unknown helper `truncate`";
    assert_eq!(err.matches(cel).count(), 1, "{err}");
    assert_eq!(err.matches(helper).count(), 1, "{err}");

    // The spellings that exist pass.
    std::fs::write(
        &file,
        sensor(r#"body.ref.startsWith("refs/")"#, "{{trunc body.ref 3}}"),
    )
    .unwrap();
    let (code, out, err) = run_cli(&["validate"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_bad_log_filter_is_an_error_not_silently_info() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run_cli(&["validate", "--log", "tripline=loud"], dir.path());
    assert_eq!(code, 2);
    assert!(
        err.contains("--log / TRIPLINE_LOG `tripline=loud`"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_colour_codes_when_not_on_a_terminal() {
    let mut t = Tripline::start(
        "sources: [{type: http, name: hook, path: /hook}]\nsubmit: {type: outbox, dir: outbox/}\n",
        &[("s.yaml", &sensor("true", "{{body.a}}"))],
        &[],
    )
    .await;
    t.terminate();
    let log = t.log();
    assert!(log.contains("INFO"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file: {log:?}"
    );
}

#[test]
fn validate_can_run_without_the_secrets_and_still_checks_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sensors")).unwrap();
    let config = "sources: [{type: github, name: gh, path: /gh, secret: {env: TRIPLINE_TEST_NEVER_SET}}]\nsubmit: {type: outbox, dir: outbox/}\nsensors: sensors/\n";
    std::fs::write(dir.path().join("tripline.yaml"), config).unwrap();
    let (code, _, err) = run_cli(&["validate"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("TRIPLINE_TEST_NEVER_SET"), "{err}");

    let (code, out, err) = run_cli(&["validate", "--skip-secrets"], dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("secrets were not read"), "{out}");

    // Everything else is still checked: a broken secret reference and a
    // bad sensor still fail.
    let broken = "sources: [{type: github, name: gh, path: /gh, secret: {env: A, file: b}}]\n";
    std::fs::write(dir.path().join("tripline.yaml"), broken).unwrap();
    let (code, _, err) = run_cli(&["validate", "--skip-secrets"], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("exactly one of `env` or `file`"), "{err}");
    std::fs::write(dir.path().join("tripline.yaml"), config).unwrap();
    std::fs::write(
        dir.path().join("sensors/s.yaml"),
        sensor("true", "{{truncate body.a 1}}").replace("source: hook", "source: gh"),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["validate", "--skip-secrets"], dir.path());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown helper `truncate`"), "{err}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "_tripline()"),
        ("zsh", "#compdef tripline"),
        ("fish", "complete -c tripline"),
    ] {
        let (code, out, err) = run_cli(&["completions", shell], dir.path());
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(
            out.contains("validate") && out.contains("skip-secrets"),
            "{shell}"
        );
    }
    let (code, out, _) = run_cli(&["--help"], dir.path());
    assert_eq!(code, 0);
    assert!(
        out.contains("Examples:") && out.contains("tripline validate --skip-secrets"),
        "{out}"
    );
    let (code, _, err) = run_cli(&["completions", "tcsh"], dir.path());
    assert_eq!(code, 2);
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}
