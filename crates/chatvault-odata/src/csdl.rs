//! `$metadata`: the CSDL document (XML, and JSON on request) generated from the model's
//! one table definition, so the feed's types can never drift from the stored columns.

use std::fmt::Write;

use chatvault_model::{ColumnDef, ColumnKind};
use serde_json::{json, Map, Value};

use crate::model::{EntitySet, CONTAINER, ENTITY_SETS, JOIN_KEY, NAMESPACE};

/// The Edm type of a column and whether it is a collection.
pub fn edm_type(kind: ColumnKind) -> (&'static str, bool) {
    match kind {
        ColumnKind::Str => ("Edm.String", false),
        ColumnKind::I32 => ("Edm.Int32", false),
        ColumnKind::I64 => ("Edm.Int64", false),
        ColumnKind::Bool => ("Edm.Boolean", false),
        ColumnKind::F64 => ("Edm.Double", false),
        ColumnKind::Timestamp => ("Edm.DateTimeOffset", false),
        ColumnKind::StrList => ("Edm.String", true),
    }
}

/// Timestamps carry microseconds; without a precision CSDL means whole seconds.
const TIMESTAMP_PRECISION: u8 = 6;

fn property_xml(out: &mut String, column: &ColumnDef) {
    let (edm, collection) = edm_type(column.kind);
    let ty = if collection {
        format!("Collection({edm})")
    } else {
        edm.to_owned()
    };
    let _ = write!(
        out,
        r#"        <Property Name="{}" Type="{ty}""#,
        column.name
    );
    if !column.nullable {
        out.push_str(r#" Nullable="false""#);
    }
    if column.kind == ColumnKind::Timestamp {
        let _ = write!(out, r#" Precision="{TIMESTAMP_PRECISION}""#);
    }
    out.push_str("/>\n");
}

fn entity_type_xml(out: &mut String, set: &EntitySet) {
    let _ = writeln!(out, r#"      <EntityType Name="{}">"#, set.type_name);
    out.push_str("        <Key>\n");
    for key in set.table.keys {
        let _ = writeln!(out, r#"          <PropertyRef Name="{key}"/>"#);
    }
    out.push_str("        </Key>\n");
    for column in set.table.columns {
        property_xml(out, column);
    }
    for nav in set.navigation {
        let target =
            crate::model::entity_set(nav.target).map_or_else(String::new, |t| t.qualified_type());
        if nav.collection {
            let _ = writeln!(
                out,
                r#"        <NavigationProperty Name="{}" Type="Collection({target})" Partner="{}"/>"#,
                nav.name, nav.partner
            );
        } else {
            let _ = writeln!(
                out,
                r#"        <NavigationProperty Name="{}" Type="{target}" Partner="{}">"#,
                nav.name, nav.partner
            );
            let _ = writeln!(
                out,
                r#"          <ReferentialConstraint Property="{JOIN_KEY}" ReferencedProperty="{JOIN_KEY}"/>"#
            );
            out.push_str("        </NavigationProperty>\n");
        }
    }
    out.push_str("      </EntityType>\n");
}

/// The CSDL XML document served at `$metadata`.
pub fn metadata_xml() -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    out.push('\n');
    out.push_str(
        r#"<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">"#,
    );
    out.push_str("\n  <edmx:DataServices>\n");
    let _ = writeln!(
        out,
        r#"    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{NAMESPACE}">"#
    );
    for set in &ENTITY_SETS {
        entity_type_xml(&mut out, set);
    }
    let _ = writeln!(out, r#"      <EntityContainer Name="{CONTAINER}">"#);
    for set in &ENTITY_SETS {
        let _ = writeln!(
            out,
            r#"        <EntitySet Name="{}" EntityType="{}">"#,
            set.name,
            set.qualified_type()
        );
        for nav in set.navigation {
            let _ = writeln!(
                out,
                r#"          <NavigationPropertyBinding Path="{}" Target="{}"/>"#,
                nav.name, nav.target
            );
        }
        out.push_str("        </EntitySet>\n");
    }
    out.push_str("      </EntityContainer>\n    </Schema>\n  </edmx:DataServices>\n</edmx:Edmx>\n");
    out
}

/// The same model as CSDL JSON (OData CSDL JSON 4.01 format; defaults omitted as the format
/// prescribes: `$Type` Edm.String, `$Nullable` false).
pub fn metadata_json() -> Value {
    let mut schema = Map::new();
    for set in &ENTITY_SETS {
        let mut ty = Map::new();
        ty.insert("$Kind".into(), json!("EntityType"));
        ty.insert("$Key".into(), json!(set.table.keys));
        for column in set.table.columns {
            let (edm, collection) = edm_type(column.kind);
            let mut prop = Map::new();
            if collection {
                prop.insert("$Collection".into(), json!(true));
            }
            if edm != "Edm.String" {
                prop.insert("$Type".into(), json!(edm));
            }
            if column.nullable {
                prop.insert("$Nullable".into(), json!(true));
            }
            if column.kind == ColumnKind::Timestamp {
                prop.insert("$Precision".into(), json!(TIMESTAMP_PRECISION));
            }
            ty.insert(column.name.into(), Value::Object(prop));
        }
        for nav in set.navigation {
            let target = crate::model::entity_set(nav.target)
                .map_or_else(String::new, |t| t.qualified_type());
            let mut prop = Map::new();
            prop.insert("$Kind".into(), json!("NavigationProperty"));
            prop.insert("$Type".into(), json!(target));
            if nav.collection {
                prop.insert("$Collection".into(), json!(true));
            } else {
                prop.insert("$Nullable".into(), json!(true));
                prop.insert(
                    "$ReferentialConstraint".into(),
                    json!({ JOIN_KEY: JOIN_KEY }),
                );
            }
            prop.insert("$Partner".into(), json!(nav.partner));
            ty.insert(nav.name.into(), Value::Object(prop));
        }
        schema.insert(set.type_name.into(), Value::Object(ty));
    }
    let mut container = Map::new();
    container.insert("$Kind".into(), json!("EntityContainer"));
    for set in &ENTITY_SETS {
        let bindings: Map<String, Value> = set
            .navigation
            .iter()
            .map(|n| (n.name.to_owned(), json!(n.target)))
            .collect();
        container.insert(
            set.name.into(),
            json!({"$Collection": true, "$Type": set.qualified_type(), "$NavigationPropertyBinding": bindings}),
        );
    }
    schema.insert(CONTAINER.into(), Value::Object(container));
    json!({
        "$Version": "4.0",
        "$EntityContainer": format!("{NAMESPACE}.{CONTAINER}"),
        NAMESPACE: schema,
    })
}

/// The service document: every entity set and where it lives.
pub fn service_document(context: &str) -> Value {
    let sets: Vec<Value> = ENTITY_SETS
        .iter()
        .map(|s| json!({"name": s.name, "kind": "EntitySet", "url": s.name}))
        .collect();
    json!({"@odata.context": context, "value": sets})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published document is kept in `odata/metadata.xml`; a change to the model must
    /// show up there too (run with CHATVAULT_BLESS=1 to rewrite it after a deliberate change).
    #[test]
    fn metadata_matches_the_golden_file() {
        let golden =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../odata/metadata.xml");
        let generated = metadata_xml();
        if std::env::var_os("CHATVAULT_BLESS").is_some() {
            std::fs::write(&golden, &generated).expect("write golden file");
        }
        let kept = std::fs::read_to_string(&golden).expect("odata/metadata.xml exists");
        assert!(kept == generated, "odata/metadata.xml differs from the generated $metadata; review the model change and re-run with CHATVAULT_BLESS=1");
    }

    #[test]
    fn json_and_xml_describe_the_same_properties() {
        let json = metadata_json();
        let xml = metadata_xml();
        for set in &ENTITY_SETS {
            let ty = &json[NAMESPACE][set.type_name];
            for column in set.table.columns {
                assert!(
                    ty.get(column.name).is_some(),
                    "{}.{}",
                    set.name,
                    column.name
                );
                assert!(xml.contains(&format!(r#"<Property Name="{}" "#, column.name)));
            }
        }
        assert_eq!(
            json[NAMESPACE]["Chat"]["Started"]["$Type"],
            "Edm.DateTimeOffset"
        );
        assert_eq!(json[NAMESPACE]["Chat"]["Tags"]["$Collection"], true);
        assert!(xml.contains(r#"<Property Name="SiteKey" Type="Edm.Int32" Nullable="false"/>"#));
    }
}
