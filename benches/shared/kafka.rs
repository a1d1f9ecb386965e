//! The Kafka workload, shared by `kafka_throughput` (through a broker) and
//! `matching` (one message, in process): the same sensor and messages.

/// The sensor: wants `bucket: raw`, renders a ConfigMap.
pub const SENSOR: &str = r#"
apiVersion: tripline.dev/v1alpha1
kind: Sensor
metadata: {name: bench}
spec:
  dependencies:
    - name: file
      source: queue
      filters: {all: [{path: body.bucket, equals: raw}, {path: body.size, gt: 0}]}
  triggers:
    - name: record
      workflow:
        manifest:
          apiVersion: v1
          kind: ConfigMap
          data: {bucket: "", key: "", event: ""}
      parameters:
        - {name: bucket, value: "{{body.bucket}}", dest: data.bucket}
        - {name: key, value: "{{body.key}}", dest: data.key}
        - {name: event, value: "{{id}}", dest: data.event}
"#;

/// The same sensor wanting `bucket: elsewhere`: no message matches.
pub fn sensor_matching_nothing() -> String {
    SENSOR.replace("equals: raw", "equals: elsewhere")
}

/// Message `i` of the bench (about 70 bytes); every one has `bucket: raw`.
pub fn message(i: usize) -> String {
    format!(
        r#"{{"n":{i},"bucket":"raw","key":"2026/11/24/part-{i}.csv","size":{}}}"#,
        1000 + i
    )
}
