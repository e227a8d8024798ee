//! The entity data model: one entity set per stored table, and the navigation properties
//! that tie every child table to its chat through ChatUID.

use chatvault_model::{ChatRow, LineRow, PageRow, SurveyRow, TableDef, TagRow};

pub const NAMESPACE: &str = "Chatvault";
pub const CONTAINER: &str = "Container";
/// The column every child table joins its chat on.
pub const JOIN_KEY: &str = "ChatUID";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Navigation {
    pub name: &'static str,
    /// The entity set it leads to.
    pub target: &'static str,
    /// Chats → Lines is many; ChatLines → Chat is one.
    pub collection: bool,
    /// The navigation property on the other side.
    pub partner: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntitySet {
    pub name: &'static str,
    pub type_name: &'static str,
    pub table: &'static TableDef,
    pub navigation: &'static [Navigation],
}

impl EntitySet {
    pub fn navigation(&self, name: &str) -> Option<&'static Navigation> {
        self.navigation.iter().find(|n| n.name == name)
    }

    pub fn qualified_type(&self) -> String {
        format!("{NAMESPACE}.{}", self.type_name)
    }
}

const fn to_chat(partner: &'static str) -> Navigation {
    Navigation {
        name: "Chat",
        target: "Chats",
        collection: false,
        partner,
    }
}

/// Every entity set, Chats first. Chats already has the structural properties `Tags`
/// (the tag list) and `PageViews` (how many pages), so the navigations to those rows are
/// named `ChatTags` and `Pages`.
pub const ENTITY_SETS: [EntitySet; 5] = [
    EntitySet {
        name: "Chats",
        type_name: "Chat",
        table: &ChatRow::TABLE,
        navigation: &[
            Navigation {
                name: "Lines",
                target: "ChatLines",
                collection: true,
                partner: "Chat",
            },
            Navigation {
                name: "SurveyAnswers",
                target: "SurveyAnswers",
                collection: true,
                partner: "Chat",
            },
            Navigation {
                name: "Pages",
                target: "PageViews",
                collection: true,
                partner: "Chat",
            },
            Navigation {
                name: "ChatTags",
                target: "ChatTags",
                collection: true,
                partner: "Chat",
            },
        ],
    },
    EntitySet {
        name: "ChatLines",
        type_name: "ChatLine",
        table: &LineRow::TABLE,
        navigation: &[to_chat("Lines")],
    },
    EntitySet {
        name: "SurveyAnswers",
        type_name: "SurveyAnswer",
        table: &SurveyRow::TABLE,
        navigation: &[to_chat("SurveyAnswers")],
    },
    EntitySet {
        name: "PageViews",
        type_name: "PageView",
        table: &PageRow::TABLE,
        navigation: &[to_chat("Pages")],
    },
    EntitySet {
        name: "ChatTags",
        type_name: "ChatTag",
        table: &TagRow::TABLE,
        navigation: &[to_chat("ChatTags")],
    },
];

pub fn entity_set(name: &str) -> Option<&'static EntitySet> {
    ENTITY_SETS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_table_is_an_entity_set_and_navigation_is_symmetric() {
        for table in chatvault_model::TABLES {
            assert!(
                ENTITY_SETS.iter().any(|s| s.table.name == table.name),
                "{}",
                table.name
            );
        }
        for set in &ENTITY_SETS {
            assert!(set.table.column(JOIN_KEY).is_some());
            for nav in set.navigation {
                assert!(
                    set.table.column(nav.name).is_none(),
                    "{} clashes with a column",
                    nav.name
                );
                let target = entity_set(nav.target).expect("target exists");
                let back = target.navigation(nav.partner).expect("partner exists");
                assert_eq!(back.target, set.name);
                assert_eq!(back.partner, nav.name);
            }
        }
    }
}
