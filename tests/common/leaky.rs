//! The skills the reload-leak tests reload over and over: a Luau skill
//! that `require`s an own file and a dependency, and a Rhai skill that
//! `import`s an own file — each a way an engine could keep its version
//! alive.

pub const LUAU_MANIFEST: &str = r#"
[skill]
name = "leaky"
version = "1.0.0"
description = "reloaded many times"
entry = "main.luau"
[dependencies]
lib = "^1"
[[tools]]
name = "hi"
description = "answers"
"#;

pub const LIB_MANIFEST: &str = r#"
[skill]
name = "lib"
version = "1.0.0"
description = "a dependency"
entry = "main.luau"
"#;

pub const LIB_SRC: &str = "local M = {}\nfunction M.word() return 'lib' end\nreturn M\n";

pub fn luau_src(n: usize) -> String {
    // `require` both of an own file and of a dependency: both bind a
    // `require` closure to the skill version.
    format!(
        "local util = require('./util')\nlocal lib = require('lib')\nlocal M = {{}}\nfunction M.hi() return util.n() + {n} .. lib.word() end\nreturn M\n"
    )
}

pub const LUAU_UTIL: &str = "local U = {}\nfunction U.n() return 1 end\nreturn U\n";

pub const RHAI_MANIFEST: &str = r#"
[skill]
name = "leakyr"
version = "1.0.0"
description = "reloaded many times"
entry = "main.rhai"
[[tools]]
name = "hi"
description = "answers"
"#;

pub fn rhai_src(n: usize) -> String {
    format!("import \"./util\" as util;\nfn hi(args) {{ util::n() + {n} }}\n")
}

pub const RHAI_UTIL: &str = "fn n() { 1 }\n";
