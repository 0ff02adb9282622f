//! Every GraphQL document pincapi sends to Shopify is valid against Shopify's Admin API
//! schema (2026-04, `testdata/shopify/admin-graphql/`): fields, arguments, variable types and
//! enum values, and none of it deprecated.

use apollo_compiler::ast::Definition;
use apollo_compiler::{ExecutableDocument, Schema};
use pincapi::shopify::admin::{BULK_ORDERS_INNER, DOCUMENTS, Document};

fn schema() -> apollo_compiler::validation::Valid<Schema> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/shopify/admin-graphql/admin-2026-04.graphql"
    );
    let sdl = std::fs::read_to_string(path).expect("the vendored Admin API schema");
    Schema::parse_and_validate(sdl, path).expect("Shopify's schema is valid")
}

fn all_documents() -> Vec<Document> {
    let mut v = DOCUMENTS.to_vec();
    v.extend(pincapi::shopify::bulk::DOCUMENTS);
    v
}

#[test]
fn every_document_is_valid_against_the_admin_api_schema() {
    let schema = schema();
    for d in all_documents() {
        let file = format!(
            "{}.graphql",
            if d.name.is_empty() {
                "bulk_orders_inner"
            } else {
                d.name
            }
        );
        if let Err(e) = ExecutableDocument::parse_and_validate(&schema, d.text, &file) {
            panic!("{file} is not valid against the 2026-04 schema:\n{e}");
        }
    }
}

#[test]
fn each_document_names_its_operation_and_uses_nothing_deprecated() {
    let schema = schema();
    for d in all_documents() {
        let doc = apollo_compiler::ast::Document::parse(d.text, "doc").expect("parses");
        let ops: Vec<_> = doc
            .definitions
            .iter()
            .filter_map(|def| match def {
                Definition::OperationDefinition(op) => Some(op),
                _ => None,
            })
            .collect();
        assert_eq!(ops.len(), 1, "{}: one operation per document", d.name);
        if d.text == BULK_ORDERS_INNER.text {
            assert!(ops[0].name.is_none(), "the bulk query is anonymous");
        } else {
            assert_eq!(
                ops[0].name.as_ref().map(|n| n.as_str()),
                Some(d.name),
                "the operation's name is the one sent as operationName"
            );
        }
        let exec = ExecutableDocument::parse_and_validate(&schema, d.text, "doc").unwrap();
        let mut deprecated = Vec::new();
        for op in exec.operations.iter() {
            walk(&op.selection_set, &mut deprecated);
        }
        assert!(
            deprecated.is_empty(),
            "{}: deprecated fields {deprecated:?}",
            d.name
        );
    }
}

fn walk(set: &apollo_compiler::executable::SelectionSet, out: &mut Vec<String>) {
    for sel in &set.selections {
        match sel {
            apollo_compiler::executable::Selection::Field(f) => {
                if f.definition.directives.get("deprecated").is_some() {
                    out.push(format!("{}.{}", set.ty, f.name));
                }
                for arg in &f.arguments {
                    if let Some(def) = f.definition.argument_by_name(&arg.name)
                        && def.directives.get("deprecated").is_some()
                    {
                        out.push(format!("{}.{}({})", set.ty, f.name, arg.name));
                    }
                }
                walk(&f.selection_set, out);
            }
            apollo_compiler::executable::Selection::InlineFragment(i) => {
                walk(&i.selection_set, out)
            }
            apollo_compiler::executable::Selection::FragmentSpread(_) => {}
        }
    }
}

#[test]
fn a_deprecated_or_unknown_field_is_caught() {
    let schema = schema();
    let bad = "query Bad { orders(first: 1) { nodes { id nonsenseField } } }";
    assert!(ExecutableDocument::parse_and_validate(&schema, bad, "bad").is_err());
    let old = "query Old { orders(first: 1) { nodes { id physicalLocation { id } } } }";
    let exec = ExecutableDocument::parse_and_validate(&schema, old, "old").unwrap();
    let mut deprecated = Vec::new();
    for op in exec.operations.iter() {
        walk(&op.selection_set, &mut deprecated);
    }
    assert_eq!(deprecated, ["Order.physicalLocation"]);
}
