//! Which Ingresses are ours: IngressClass `kennel` (controller `kennel.dev/ingress`), the
//! default class, and the IngressClass object `kennel up` creates as an addon.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{Ingress, IngressClass, IngressClassSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The annotation that makes an IngressClass the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The deprecated per-Ingress class annotation (it wins over `spec.ingressClassName`, as upstream).
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The IngressClass object for class `name` handled by `controller`, marked default.
pub fn ingress_class(name: &str, controller: &str) -> IngressClass {
    IngressClass {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                DEFAULT_CLASS_ANNOTATION.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(IngressClassSpec {
            controller: Some(controller.to_string()),
            parameters: None,
        }),
    }
}

fn is_default(c: &IngressClass) -> bool {
    c.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// Decides per Ingress whether this controller serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPolicy {
    /// Class names that are ours: the configured one and any IngressClass naming our controller.
    pub names: BTreeSet<String>,
    /// Ingresses without a class are ours.
    pub serve_unclassed: bool,
}

impl ClassPolicy {
    /// The policy for class `class_name` / `controller`, given the cluster's IngressClasses
    /// (None: the API server does not serve them, so the class is taken as the default).
    /// Ingresses without a class are served when one of our classes is the default, or when
    /// our class does not exist and no other class is the default.
    pub fn new(class_name: &str, controller: &str, classes: Option<&[&IngressClass]>) -> Self {
        let mut names = BTreeSet::from([class_name.to_string()]);
        let Some(classes) = classes else {
            return ClassPolicy {
                names,
                serve_unclassed: true,
            };
        };
        let ours = |c: &IngressClass| {
            c.metadata.name.as_deref() == Some(class_name)
                || c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(controller)
        };
        for c in classes.iter().filter(|c| ours(c)) {
            names.extend(c.metadata.name.clone());
        }
        let any_default = classes.iter().any(|c| is_default(c));
        let our_default = classes.iter().any(|c| is_default(c) && ours(c));
        let ours_exists = classes
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some(class_name));
        ClassPolicy {
            names,
            serve_unclassed: our_default || (!any_default && !ours_exists),
        }
    }

    /// Whether `ing` is ours.
    pub fn serves(&self, ing: &Ingress) -> bool {
        let legacy = ing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
            .filter(|v| !v.is_empty());
        let class = legacy.cloned().or_else(|| {
            ing.spec
                .as_ref()
                .and_then(|s| s.ingress_class_name.clone())
                .filter(|c| !c.is_empty())
        });
        match class {
            Some(c) => self.names.contains(&c),
            None => self.serve_unclassed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ing(v: serde_json::Value) -> Ingress {
        serde_json::from_value(v).unwrap()
    }

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        let mut c = ingress_class(name, controller);
        if !default {
            c.metadata.annotations = None;
        }
        c
    }

    #[test]
    fn the_addon_object() {
        let c = ingress_class("kennel", "kennel.dev/ingress");
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["metadata"]["name"], "kennel");
        assert_eq!(
            v["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
            "true"
        );
        assert_eq!(v["spec"]["controller"], "kennel.dev/ingress");
    }

    #[test]
    fn classes_decide() {
        let mine = ing(serde_json::json!({"spec": {"ingressClassName": "kennel"}}));
        let other = ing(serde_json::json!({"spec": {"ingressClassName": "nginx"}}));
        let none = ing(serde_json::json!({"spec": {}}));
        let legacy = ing(serde_json::json!({
            "metadata": {"annotations": {"kubernetes.io/ingress.class": "nginx"}},
            "spec": {"ingressClassName": "kennel"}}));
        let (n, c) = ("kennel", "kennel.dev/ingress");

        let p = ClassPolicy::new(n, c, None);
        assert!(p.serves(&mine) && p.serves(&none));
        assert!(!p.serves(&other) && !p.serves(&legacy));

        let ours = class(n, c, true);
        let p = ClassPolicy::new(n, c, Some(&[&ours]));
        assert!(p.serves(&none));

        let ours_not_default = class(n, c, false);
        let nginx_default = class("nginx", "k8s.io/ingress-nginx", true);
        let p = ClassPolicy::new(n, c, Some(&[&ours_not_default, &nginx_default]));
        assert!(p.serves(&mine) && !p.serves(&none) && !p.serves(&other));

        let p = ClassPolicy::new(n, c, Some(&[&nginx_default]));
        assert!(!p.serves(&none), "another class is the default");
        let p = ClassPolicy::new(n, c, Some(&[]));
        assert!(p.serves(&none), "no class at all: ours by default");

        let alias = class("kennel-alt", c, false);
        let p = ClassPolicy::new(n, c, Some(&[&alias]));
        let alt = ing(serde_json::json!({"spec": {"ingressClassName": "kennel-alt"}}));
        assert!(p.serves(&alt), "any class naming our controller");
    }
}
