//! The resource catalog: every resource the double serves, as discovery
//! describes it and as the server treats it, and Argo's JSON schema for the
//! Argo kinds.

use std::{collections::HashMap, sync::LazyLock};

use jsonschema::Validator;
use serde_json::{json, Value};

/// One resource, as discovery describes it and as the server treats it.
#[derive(Debug)]
pub(super) struct Resource {
    pub(super) group: &'static str,
    pub(super) version: &'static str,
    pub(super) kind: &'static str,
    pub(super) plural: &'static str,
    pub(super) singular: &'static str,
    pub(super) namespaced: bool,
    pub(super) verbs: &'static [&'static str],
    pub(super) short_names: &'static [&'static str],
    pub(super) categories: &'static [&'static str],
    /// Subresources (`status`, `log`, ...) and their verbs.
    pub(super) subresources: &'static [(&'static str, &'static [&'static str])],
    /// Served from a CustomResourceDefinition rather than built in.
    pub(super) custom: bool,
    /// Argo schema the objects must satisfy.
    pub(super) argo: Option<ArgoSchema>,
}

/// How an Argo kind is validated.
#[derive(Debug)]
pub(super) struct ArgoSchema {
    /// Definition in the Argo JSON schema.
    pub(super) definition: &'static str,
    /// Dotted path of the embedded `WorkflowSpec` that must have templates or a
    /// `workflowTemplateRef`, for kinds Argo submits as workflows.
    pub(super) workflow_spec: Option<&'static str>,
}

const BUILTIN_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
const NAMESPACE_VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// CRD-served resources list their verbs in this order.
const CUSTOM_VERBS: &[&str] = &[
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "create",
    "update",
    "watch",
];
const STATUS: (&str, &[&str]) = ("status", &["get", "patch", "update"]);
const TEKTON_CATEGORIES: &[&str] = &["tekton", "tekton-pipelines"];

const fn builtin(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
) -> Resource {
    Resource {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        namespaced: true,
        verbs: BUILTIN_VERBS,
        short_names: &[],
        categories: &[],
        subresources: &[],
        custom: false,
        argo: None,
    }
}

const fn argo(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    argo: ArgoSchema,
) -> Resource {
    Resource {
        group: "argoproj.io",
        version: "v1alpha1",
        kind,
        plural,
        singular,
        namespaced: true,
        verbs: CUSTOM_VERBS,
        short_names,
        categories: &[],
        subresources: &[],
        custom: true,
        argo: Some(argo),
    }
}

const fn tekton(
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    subresources: &'static [(&'static str, &'static [&'static str])],
) -> Resource {
    Resource {
        group: "tekton.dev",
        version: "v1",
        kind,
        plural,
        singular,
        namespaced: true,
        verbs: CUSTOM_VERBS,
        short_names,
        categories: TEKTON_CATEGORIES,
        subresources,
        custom: true,
        argo: None,
    }
}

/// Everything the double serves, in discovery order. Plural names are unique.
pub(super) static RESOURCES: &[Resource] = &[
    Resource {
        short_names: &["cm"],
        ..builtin("", "ConfigMap", "configmaps", "configmap")
    },
    Resource {
        short_names: &["ev"],
        ..builtin("", "Event", "events", "event")
    },
    Resource {
        namespaced: false,
        verbs: NAMESPACE_VERBS,
        short_names: &["ns"],
        subresources: &[("finalize", &["update"]), STATUS],
        ..builtin("", "Namespace", "namespaces", "namespace")
    },
    Resource {
        short_names: &["po"],
        categories: &["all"],
        subresources: &[("log", &["get"]), STATUS],
        ..builtin("", "Pod", "pods", "pod")
    },
    builtin("", "Secret", "secrets", "secret"),
    Resource {
        short_names: &["sa"],
        ..builtin("", "ServiceAccount", "serviceaccounts", "serviceaccount")
    },
    Resource {
        short_names: &["svc"],
        categories: &["all"],
        subresources: &[STATUS],
        ..builtin("", "Service", "services", "service")
    },
    Resource {
        short_names: &["deploy"],
        categories: &["all"],
        subresources: &[("scale", &["get", "patch", "update"]), STATUS],
        ..builtin("apps", "Deployment", "deployments", "deployment")
    },
    Resource {
        short_names: &["cj"],
        categories: &["all"],
        subresources: &[STATUS],
        ..builtin("batch", "CronJob", "cronjobs", "cronjob")
    },
    Resource {
        categories: &["all"],
        subresources: &[STATUS],
        ..builtin("batch", "Job", "jobs", "job")
    },
    Resource {
        namespaced: false,
        ..argo(
            "ClusterWorkflowTemplate",
            "clusterworkflowtemplates",
            "clusterworkflowtemplate",
            &["clusterwftmpl", "cwft"],
            ArgoSchema {
                definition: "io.argoproj.workflow.v1alpha1.ClusterWorkflowTemplate",
                workflow_spec: None,
            },
        )
    },
    argo(
        "CronWorkflow",
        "cronworkflows",
        "cronworkflow",
        &["cwf", "cronwf"],
        ArgoSchema {
            definition: "io.argoproj.workflow.v1alpha1.CronWorkflow",
            workflow_spec: Some("spec.workflowSpec"),
        },
    ),
    argo(
        "Workflow",
        "workflows",
        "workflow",
        &["wf"],
        ArgoSchema {
            definition: "io.argoproj.workflow.v1alpha1.Workflow",
            workflow_spec: Some("spec"),
        },
    ),
    argo(
        "WorkflowTemplate",
        "workflowtemplates",
        "workflowtemplate",
        &["wftmpl"],
        ArgoSchema {
            definition: "io.argoproj.workflow.v1alpha1.WorkflowTemplate",
            workflow_spec: None,
        },
    ),
    tekton(
        "PipelineRun",
        "pipelineruns",
        "pipelinerun",
        &["pr", "prs"],
        &[STATUS],
    ),
    tekton("Pipeline", "pipelines", "pipeline", &[], &[]),
    tekton("TaskRun", "taskruns", "taskrun", &["tr", "trs"], &[STATUS]),
    tekton("Task", "tasks", "task", &[], &[]),
];

impl Resource {
    pub(super) fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        RESOURCES
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub(super) fn namespace_resource() -> &'static Resource {
        Resource::find("", "v1", "namespaces").expect("namespaces are in the catalog")
    }

    /// `argoproj.io/v1alpha1`, or `v1` for the core group.
    pub(super) fn api_version(&self) -> String {
        group_version(self.group, self.version)
    }

    pub(super) fn has_status_subresource(&self) -> bool {
        self.subresources.iter().any(|(name, _)| *name == "status")
    }
}

pub(super) fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// `workflows.argoproj.io` / `Workflow.argoproj.io`; core names stay bare.
pub(super) fn qualify(name: &str, group: &str) -> String {
    if group.is_empty() {
        name.to_owned()
    } else {
        format!("{name}.{group}")
    }
}

/// `(group, version)` pairs served under `/apis`, in catalog order.
pub(super) fn api_group_versions() -> Vec<(&'static str, &'static str)> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for resource in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !pairs.contains(&(resource.group, resource.version)) {
            pairs.push((resource.group, resource.version));
        }
    }
    pairs
}

/// The JSON schema definitions of `tests/fixtures/argo/workflows.schema.json`,
/// widened where Argo's generated schema is narrower than what Kubernetes and
/// Argo actually decode, so that real manifests validate:
/// - `IntOrString` takes integers too (`retryStrategy.limit: 10`);
/// - `Quantity` takes numbers too (`cpu: 1`);
/// - parameter values and defaults are Argo `AnyString`s, which take numbers
///   and booleans too.
static ARGO_DEFINITIONS: LazyLock<Value> = LazyLock::new(|| {
    let mut schema: Value =
        serde_json::from_str(include_str!("../../../fixtures/argo/workflows.schema.json"))
            .expect("the Argo JSON schema is JSON");
    let mut definitions = schema["definitions"].take();
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"] =
        json!(["integer", "string"]);
    definitions["io.k8s.apimachinery.pkg.api.resource.Quantity"]["type"] =
        json!(["number", "string"]);
    let any_string = json!(["string", "number", "boolean"]);
    for (definition, property) in [
        ("io.argoproj.workflow.v1alpha1.Parameter", "value"),
        ("io.argoproj.workflow.v1alpha1.Parameter", "default"),
        ("io.argoproj.workflow.v1alpha1.ValueFrom", "default"),
    ] {
        definitions[definition]["properties"][property]["type"] = any_string.clone();
    }
    definitions
});

/// One compiled validator per Argo kind in the catalog, built once per test binary.
pub(super) static ARGO_VALIDATORS: LazyLock<HashMap<&'static str, Validator>> =
    LazyLock::new(|| {
        RESOURCES
            .iter()
            .filter_map(|resource| resource.argo.as_ref())
            .map(|argo| {
                let mut schema = json!({
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "$ref": format!("#/definitions/{}", argo.definition),
                });
                schema["definitions"] = ARGO_DEFINITIONS.clone();
                let validator = jsonschema::validator_for(&schema).unwrap_or_else(|error| {
                    panic!("compile the schema of {}: {error}", argo.definition)
                });
                (argo.definition, validator)
            })
            .collect()
    });
