//! The Kubernetes API double, driven by the real `kube` client (and by raw HTTP
//! where the exact bytes matter).

use std::{io, time::Duration};

use kube::{
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
    core::response::StatusCause,
    discovery::{pinned_kind, verbs, Discovery, Scope},
    Api, Client, Config, ResourceExt,
};
use serde::Deserialize as _;
use serde_json::{json, Value};

use crate::support::kube_api::{Cause, Fault, KubeApi, Status, NO_RESPONSE};

const HELLO_WORLD: &str = include_str!("../fixtures/argo/examples/hello-world.yaml");
const STEPS: &str = include_str!("../fixtures/argo/examples/steps.yaml");
const DAG_DIAMOND: &str = include_str!("../fixtures/argo/examples/dag-diamond.yaml");
const ARGUMENTS_PARAMETERS: &str =
    include_str!("../fixtures/argo/examples/arguments-parameters.yaml");
const WORKFLOW_TEMPLATES: &str =
    include_str!("../fixtures/argo/examples/workflow-template.templates.yaml");
const WORKFLOW_TEMPLATE_REF: &str =
    include_str!("../fixtures/argo/examples/workflow-template.workflow-template-ref.yaml");

const WORKFLOWS_PATH: &str = "/apis/argoproj.io/v1alpha1/namespaces/default/workflows";

/// A client built the way a user's would be: from the generated kubeconfig file.
async fn client_with(api: &KubeApi, adjust: impl FnOnce(&mut Config)) -> Client {
    let dir = tempfile::tempdir().expect("temporary directory");
    let kubeconfig =
        Kubeconfig::read_from(api.write_kubeconfig(dir.path())).expect("read kubeconfig");
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    adjust(&mut config);
    Client::try_from(config).expect("kube client")
}

async fn client(api: &KubeApi) -> Client {
    client_with(api, |_| {}).await
}

/// A client that surfaces 429/503/504 instead of retrying them.
async fn client_without_retries(api: &KubeApi) -> Client {
    client_with(api, |config| config.default_retry = false).await
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

fn workflows(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let workflows = resource("argoproj.io", "v1alpha1", "Workflow", "workflows");
    Api::namespaced_with(client.clone(), namespace, &workflows)
}

fn manifests(yaml: &str) -> Vec<DynamicObject> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|document| DynamicObject::deserialize(document).expect("a Kubernetes manifest"))
        .collect()
}

fn manifest(yaml: &str) -> DynamicObject {
    let mut all = manifests(yaml);
    assert_eq!(all.len(), 1, "one manifest expected");
    all.remove(0)
}

fn object(value: Value) -> DynamicObject {
    serde_json::from_value(value).expect("a Kubernetes object")
}

/// A minimal valid Workflow named `name`.
fn workflow(name: &str) -> Value {
    json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {
            "entrypoint": "main",
            "templates": [{"name": "main", "container": {"image": "busybox"}}],
        },
    })
}

/// The `Status` of a failed call; panics on any other error.
fn api_status(result: kube::Result<impl std::fmt::Debug>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

fn status_causes(status: &kube::core::Status) -> Vec<StatusCause> {
    status
        .details
        .as_ref()
        .map(|d| d.causes.clone())
        .unwrap_or_default()
}

/// Kind of the I/O error behind a transport failure, if any.
fn io_error_kind(error: &kube::Error) -> Option<io::ErrorKind> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(io_error) = error.downcast_ref::<io::Error>() {
            return Some(io_error.kind());
        }
        source = error.source();
    }
    None
}

async fn post_raw(api: &KubeApi, path: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}{path}", api.url()))
        .json(body)
        .send()
        .await
        .expect("raw POST")
}

#[tokio::test]
async fn discovery_resolves_argo_batch_tekton_and_core_kinds() {
    let api = KubeApi::start().await;
    let client = client(&api).await;

    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow");
    let (workflows, capabilities) = pinned_kind(&client, &gvk).await.expect("pinned Workflow");
    assert_eq!(workflows.plural, "workflows");
    assert_eq!(workflows.api_version, "argoproj.io/v1alpha1");
    assert_eq!(capabilities.scope, Scope::Namespaced);
    assert!(capabilities.supports_operation(verbs::CREATE));

    for (group, version, kind, plural) in [
        ("batch", "v1", "Job", "jobs"),
        ("tekton.dev", "v1", "PipelineRun", "pipelineruns"),
        ("", "v1", "ConfigMap", "configmaps"),
    ] {
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let (found, _) = pinned_kind(&client, &gvk).await.expect(kind);
        assert_eq!(found.plural, plural);
    }

    for discovery in [
        Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery"),
        Discovery::new(client.clone())
            .run_aggregated()
            .await
            .expect("aggregated discovery"),
    ] {
        for group in ["", "argoproj.io", "batch", "tekton.dev"] {
            assert!(discovery.has_group(group), "group {group:?} discovered");
        }
        let (templates, capabilities) = discovery
            .resolve_gvk(&GroupVersionKind::gvk(
                "argoproj.io",
                "v1alpha1",
                "WorkflowTemplate",
            ))
            .expect("WorkflowTemplate discovered");
        assert_eq!(templates.plural, "workflowtemplates");
        assert_eq!(capabilities.scope, Scope::Namespaced);
        let (namespaces, capabilities) = discovery
            .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"))
            .expect("Namespace discovered");
        assert_eq!(namespaces.plural, "namespaces");
        assert_eq!(capabilities.scope, Scope::Cluster);
    }
}

#[tokio::test]
async fn unknown_group_versions_are_404_statuses() {
    let api = KubeApi::start().await;
    let client = client(&api).await;

    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let status = api_status(pinned_kind(&client, &gvk).await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));

    let response = reqwest::get(format!("{}/apis/argoproj.io/v1", api.url()))
        .await
        .expect("GET unknown version");
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body, Status::resource_not_found().to_json());
    assert_eq!(
        body["message"],
        "the server could not find the requested resource"
    );
}

#[tokio::test]
async fn creating_the_hello_world_example_stores_it_with_system_fields() {
    let api = KubeApi::start().await;
    let client = client(&api).await;

    let created = workflows(&client, "default")
        .create(&PostParams::default(), &manifest(HELLO_WORLD))
        .await
        .expect("create hello-world");

    let name = created.name_any();
    let suffix = name
        .strip_prefix("hello-world-")
        .expect("generateName prefix kept");
    assert_eq!(suffix.len(), 5, "five generated characters in {name}");
    assert!(suffix
        .chars()
        .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    assert_eq!(created.namespace().as_deref(), Some("default"));
    assert_eq!(created.uid().map(|uid| uid.len()), Some(36));
    let version: u64 = created
        .resource_version()
        .expect("resourceVersion")
        .parse()
        .expect("numeric resourceVersion");
    assert!(version > 0);
    assert!(created.creation_timestamp().is_some());
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.data["spec"]["entrypoint"], "hello-world");

    let stored = api.object("default", "workflows", &name).expect("stored");
    assert_eq!(stored["metadata"]["uid"], json!(created.uid()));
    assert_eq!(api.objects("workflows"), vec![stored]);
    assert_eq!(api.create_attempts(), 1);
    assert!(api
        .request_log()
        .contains(&("POST".to_owned(), WORKFLOWS_PATH.to_owned(), 201)));

    let fetched = workflows(&client, "default").get(&name).await.expect("get");
    assert_eq!(fetched.resource_version(), created.resource_version());
}

#[tokio::test]
async fn every_real_argo_example_is_accepted() {
    let api = KubeApi::start().await;
    let client = client(&api).await;

    let templates = resource(
        "argoproj.io",
        "v1alpha1",
        "WorkflowTemplate",
        "workflowtemplates",
    );
    let templates: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &templates);
    for template in manifests(WORKFLOW_TEMPLATES) {
        templates
            .create(&PostParams::default(), &template)
            .await
            .unwrap_or_else(|e| panic!("WorkflowTemplate {} rejected: {e}", template.name_any()));
    }
    for example in [
        HELLO_WORLD,
        STEPS,
        DAG_DIAMOND,
        ARGUMENTS_PARAMETERS,
        WORKFLOW_TEMPLATE_REF,
    ] {
        workflows(&client, "default")
            .create(&PostParams::default(), &manifest(example))
            .await
            .unwrap_or_else(|e| panic!("example rejected: {e}\n{example}"));
    }

    assert_eq!(api.objects("workflowtemplates").len(), 5);
    assert_eq!(api.objects("workflows").len(), 5);
}

#[tokio::test]
async fn workflow_template_ref_workflow_is_accepted() {
    let api = KubeApi::start().await;
    let client = client(&api).await;

    let created = workflows(&client, "default")
        .create(&PostParams::default(), &manifest(WORKFLOW_TEMPLATE_REF))
        .await
        .expect("create a workflowTemplateRef Workflow");

    assert!(created
        .name_any()
        .starts_with("workflow-template-hello-world-"));
    let stored = api
        .object("default", "workflows", &created.name_any())
        .expect("stored");
    assert_eq!(
        stored["spec"]["workflowTemplateRef"]["name"],
        "workflow-template-submittable"
    );
}

#[tokio::test]
async fn taken_name_is_409_already_exists() {
    let api = KubeApi::start().await;
    let client = client(&api).await;
    let workflows = workflows(&client, "default");

    workflows
        .create(&PostParams::default(), &object(workflow("x")))
        .await
        .expect("first create");
    let status = api_status(
        workflows
            .create(&PostParams::default(), &object(workflow("x")))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(
        status.message,
        r#"workflows.argoproj.io "x" already exists"#
    );

    let response = post_raw(&api, WORKFLOWS_PATH, &workflow("x")).await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(
        body,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "workflows.argoproj.io \"x\" already exists",
            "reason": "AlreadyExists",
            "details": {"name": "x", "group": "argoproj.io", "kind": "workflows"},
            "code": 409,
        })
    );
    assert_eq!(api.objects("workflows").len(), 1);
}

#[tokio::test]
async fn schema_violations_are_422_with_one_cause_per_field() {
    let api = KubeApi::start().await;
    let client = client(&api).await;

    let mut bad = workflow("bad");
    bad["spec"]["templates"][0]["container"] = json!("busybox");
    bad["spec"]["parallelism"] = json!("lots");
    let status = api_status(
        workflows(&client, "default")
            .create(&PostParams::default(), &object(bad))
            .await,
    );

    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let details = status.details.as_ref().expect("details");
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("argoproj.io", "Workflow")
    );
    assert_eq!(details.name, "bad");
    let causes = status_causes(&status);
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert!(
        fields.contains(&"spec.templates[0].container"),
        "{causes:?}"
    );
    assert!(fields.contains(&"spec.parallelism"), "{causes:?}");
    let container = causes
        .iter()
        .find(|c| c.field == "spec.templates[0].container")
        .expect("container cause");
    assert_eq!(container.reason, "FieldValueTypeInvalid");
    assert_eq!(
        container.message,
        r#"Invalid value: "string": spec.templates[0].container in body must be of type object: "string""#
    );
    assert!(status
        .message
        .starts_with(r#"Workflow.argoproj.io "bad" is invalid: ["#));
    assert!(api.objects("workflows").is_empty());
}

#[tokio::test]
async fn missing_required_schema_field_is_422_required() {
    let api = KubeApi::start().await;
    let client = client(&api).await;

    let mut no_image = workflow("no-image");
    no_image["spec"]["templates"][0]["container"] = json!({"command": ["echo"]});
    let status = api_status(
        workflows(&client, "default")
            .create(&PostParams::default(), &object(no_image))
            .await,
    );

    assert_eq!(status.code, 422);
    let expected = Cause::required("spec.templates[0].container.image", "");
    let causes = status_causes(&status);
    assert!(
        causes.iter().any(|c| c.field == expected.field
            && c.reason == expected.reason
            && c.message == "Required value"),
        "{causes:?}"
    );
}

#[tokio::test]
async fn workflow_needs_templates_or_a_workflow_template_ref() {
    let api = KubeApi::start().await;
    let client = client(&api).await;

    let mut empty = workflow("empty");
    empty["spec"] = json!({"entrypoint": "main"});
    let status = api_status(
        workflows(&client, "default")
            .create(&PostParams::default(), &object(empty))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    let causes = status_causes(&status);
    assert_eq!(causes.len(), 1, "{causes:?}");
    assert_eq!(causes[0].field, "spec.templates");
    assert_eq!(causes[0].reason, "FieldValueRequired");

    let mut both = workflow("both");
    both["spec"]["workflowTemplateRef"] = json!({"name": "some-template"});
    let status = api_status(
        workflows(&client, "default")
            .create(&PostParams::default(), &object(both))
            .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(status_causes(&status)[0].reason, "FieldValueForbidden");
    assert!(api.objects("workflows").is_empty());
}

#[tokio::test]
async fn object_meta_rules_are_422() {
    let api = KubeApi::start().await;
    let client = client(&api).await;
    let workflows = workflows(&client, "default");

    let status = api_status(
        workflows
            .create(&PostParams::default(), &object(workflow("Hello_World")))
            .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(status_causes(&status)[0].field, "metadata.name");
    assert!(status_causes(&status)[0]
        .message
        .starts_with(r#"Invalid value: "Hello_World": a lowercase RFC 1123 subdomain"#));

    let mut nameless = workflow("");
    nameless["metadata"] = json!({});
    let status = api_status(
        workflows
            .create(&PostParams::default(), &object(nameless))
            .await,
    );
    assert_eq!(status.code, 422);
    assert_eq!(
        status.message,
        r#"Workflow.argoproj.io "" is invalid: metadata.name: Required value: name or generateName is required"#
    );

    let mut labelled = workflow("labelled");
    labelled["metadata"]["labels"] = json!({"branch": "feature/login"});
    let status = api_status(
        workflows
            .create(&PostParams::default(), &object(labelled))
            .await,
    );
    assert_eq!(status.code, 422);
    let causes = status_causes(&status);
    assert_eq!(causes[0].field, "metadata.labels");
    assert!(causes[0]
        .message
        .starts_with(r#"Invalid value: "feature/login": a valid label"#));

    assert!(api.objects("workflows").is_empty());
}

#[tokio::test]
async fn body_must_agree_with_the_url() {
    let api = KubeApi::start().await;
    let client = client(&api).await;
    api.add_namespace("other");

    let mut elsewhere = workflow("elsewhere");
    elsewhere["metadata"]["namespace"] = json!("other");
    let status = api_status(
        workflows(&client, "default")
            .create(&PostParams::default(), &object(elsewhere))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        status.message,
        "the namespace of the provided object does not match the namespace sent on the request"
    );

    let mut old_version = workflow("old");
    old_version["apiVersion"] = json!("argoproj.io/v1beta1");
    let response = post_raw(&api, WORKFLOWS_PATH, &old_version).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(
        body["message"],
        "the API version in the data (argoproj.io/v1beta1) does not match the expected API version (argoproj.io/v1alpha1)"
    );

    let mut template = workflow("template");
    template["kind"] = json!("WorkflowTemplate");
    let response = post_raw(&api, WORKFLOWS_PATH, &template).await;
    assert_eq!(response.status(), 400);

    assert!(api.objects("workflows").is_empty());
}

#[tokio::test]
async fn namespace_must_exist_until_added() {
    let api = KubeApi::start().await;
    let client = client(&api).await;
    let argo = workflows(&client, "argo");

    let status = api_status(
        argo.create(&PostParams::default(), &object(workflow("w")))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, r#"namespaces "argo" not found"#);

    api.add_namespace("argo");
    argo.create(&PostParams::default(), &object(workflow("w")))
        .await
        .expect("create once the namespace exists");
    assert!(api.object("argo", "workflows", "w").is_some());
}

#[tokio::test]
async fn get_list_and_delete() {
    let api = KubeApi::start().await;
    let client = client(&api).await;
    api.add_namespace("other");

    let status = api_status(workflows(&client, "default").get("missing").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        status.message,
        r#"workflows.argoproj.io "missing" not found"#
    );

    for (namespace, name, team) in [
        ("default", "a", "red"),
        ("default", "b", "blue"),
        ("other", "c", "red"),
    ] {
        let mut labelled = workflow(name);
        labelled["metadata"]["labels"] = json!({"team": team});
        workflows(&client, namespace)
            .create(&PostParams::default(), &object(labelled))
            .await
            .expect("create");
    }

    let listed = workflows(&client, "default")
        .list(&ListParams::default())
        .await
        .expect("list");
    let names: Vec<String> = listed.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["a", "b"]);
    let list_version: u64 = listed
        .metadata
        .resource_version
        .as_deref()
        .expect("list resourceVersion")
        .parse()
        .expect("numeric");
    assert!(list_version >= 3);

    let all = resource("argoproj.io", "v1alpha1", "Workflow", "workflows");
    let all: Api<DynamicObject> = Api::all_with(client.clone(), &all);
    let red = all
        .list(&ListParams::default().labels("team=red"))
        .await
        .expect("list by label");
    let names: Vec<String> = red.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["a", "c"]);
    let not_red = all
        .list(&ListParams::default().labels("team notin (red)"))
        .await
        .expect("list by set label");
    assert_eq!(not_red.items.len(), 1);
    let by_name = all
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .expect("list by field");
    assert_eq!(by_name.items.len(), 1);

    let deleted = workflows(&client, "default")
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let deleted = deleted
        .left()
        .expect("custom resources answer with the object");
    assert_eq!(deleted.name_any(), "a");
    let status = api_status(workflows(&client, "default").get("a").await);
    assert_eq!(status.code, 404);
    assert_eq!(api.objects("workflows").len(), 2);
}

#[tokio::test]
async fn dry_run_validates_without_storing() {
    let api = KubeApi::start().await;
    let client = client(&api).await;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };

    let answered = workflows(&client, "default")
        .create(&dry_run, &object(workflow("trial")))
        .await
        .expect("dry-run create");
    assert_eq!(answered.name_any(), "trial");
    assert!(answered.uid().is_some());
    assert!(api.objects("workflows").is_empty());

    let mut bad = workflow("trial");
    bad["spec"]["templates"][0]["container"] = json!(7);
    let status = api_status(
        workflows(&client, "default")
            .create(&dry_run, &object(bad))
            .await,
    );
    assert_eq!(status.code, 422);
}

#[tokio::test]
async fn batch_job_is_created() {
    let api = KubeApi::start().await;
    let client = client(&api).await;
    let jobs = resource("batch", "v1", "Job", "jobs");
    let jobs: Api<DynamicObject> = Api::namespaced_with(client, "default", &jobs);

    let job = object(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"generateName": "build-"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "build", "image": "busybox", "command": ["true"]}],
        }}},
        "status": {"succeeded": 1},
    }));
    let created = jobs
        .create(&PostParams::default(), &job)
        .await
        .expect("create Job");

    assert!(created.name_any().starts_with("build-"));
    assert!(
        created.data.get("status").is_none(),
        "status is reset on create"
    );
    let stored = api.objects("jobs");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0]["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox"
    );
}

#[tokio::test]
async fn too_many_requests_surfaces_as_429_with_retry_after() {
    let api = KubeApi::start().await;

    api.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let response = post_raw(&api, WORKFLOWS_PATH, &workflow("raw")).await;
    assert_eq!(response.status(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("7")
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body, Status::too_many_requests(7).to_json());

    let client = client_without_retries(&api).await;
    api.fail_next(
        1,
        Fault::TooManyRequests {
            retry_after_secs: 1,
        },
    );
    let status = api_status(
        workflows(&client, "default")
            .create(&PostParams::default(), &object(workflow("w")))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (429, "TooManyRequests")
    );
    assert!(api.objects("workflows").is_empty());
}

#[tokio::test]
async fn kube_default_retries_ride_out_429s() {
    let api = KubeApi::start().await;
    let client = client(&api).await;

    api.fail_next(
        2,
        Fault::TooManyRequests {
            retry_after_secs: 0,
        },
    );
    workflows(&client, "default")
        .create(&PostParams::default(), &object(workflow("patient")))
        .await
        .expect("create after two 429s");

    assert_eq!(api.create_attempts(), 3);
    let statuses: Vec<u16> = api
        .request_log()
        .into_iter()
        .map(|(_, _, status)| status)
        .collect();
    assert_eq!(statuses, [429, 429, 201]);
}

#[tokio::test]
async fn dropped_connection_is_a_transport_error_and_nothing_is_stored() {
    let api = KubeApi::start().await;
    let client = client(&api).await;
    let workflows = workflows(&client, "default");

    api.fail_next(1, Fault::Drop);
    let error = workflows
        .create(&PostParams::default(), &object(workflow("dropped")))
        .await
        .expect_err("a dropped connection fails the create");
    assert!(
        matches!(error, kube::Error::Service(_)),
        "connection error expected, got {error:?}"
    );
    assert!(api.objects("workflows").is_empty());
    assert_eq!(
        api.request_log(),
        [("POST".to_owned(), WORKFLOWS_PATH.to_owned(), NO_RESPONSE)]
    );

    api.fail_next(1, Fault::Drop);
    let raw = reqwest::Client::new()
        .post(format!("{}{WORKFLOWS_PATH}", api.url()))
        .json(&workflow("dropped"))
        .send()
        .await;
    assert!(raw.is_err(), "no HTTP response expected, got {raw:?}");

    workflows
        .create(&PostParams::default(), &object(workflow("dropped")))
        .await
        .expect("the next create gets through");
    assert_eq!(api.create_attempts(), 3);
}

#[tokio::test]
async fn hang_outlasts_the_client_timeout_and_still_commits() {
    let api = KubeApi::start().await;
    let client = client_with(&api, |config| {
        config.read_timeout = Some(Duration::from_millis(300))
    })
    .await;
    let workflows = workflows(&client, "default");

    api.fail_next(1, Fault::Hang(Duration::from_millis(800)));
    let error = workflows
        .create(&PostParams::default(), &object(workflow("slow")))
        .await
        .expect_err("the client times out");
    assert_eq!(
        io_error_kind(&error),
        Some(io::ErrorKind::TimedOut),
        "{error:?}"
    );
    assert!(api.objects("workflows").is_empty(), "not committed yet");

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        api.object("default", "workflows", "slow").is_some(),
        "committed after the hang"
    );
    let status = api_status(
        workflows
            .create(&PostParams::default(), &object(workflow("slow")))
            .await,
    );
    assert_eq!(status.code, 409, "a retry finds the committed object");
}

#[tokio::test]
async fn down_fails_writes_only_and_fail_all_fails_everything_until_recovered() {
    let api = KubeApi::start().await;
    let client = client_without_retries(&api).await;
    let workflows = workflows(&client, "default");
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Workflow");

    api.set_down(true);
    let status = api_status(
        workflows
            .create(&PostParams::default(), &object(workflow("w")))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (503, "ServiceUnavailable")
    );
    pinned_kind(&client, &gvk)
        .await
        .expect("discovery works while writes are down");
    workflows
        .list(&ListParams::default())
        .await
        .expect("reads work while writes are down");
    api.set_down(false);
    workflows
        .create(&PostParams::default(), &object(workflow("w")))
        .await
        .expect("create once up again");

    api.fail_all(Fault::Status(500));
    let status = api_status(pinned_kind(&client, &gvk).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (500, "InternalError")
    );
    let status = api_status(workflows.get("w").await);
    assert_eq!(status.code, 500);
    api.recover();
    workflows.get("w").await.expect("get after recovery");
}
