//! Misbehaving `wasi:http` guests for Lattice's tests, encoded by hand: each
//! exports `wasi:http/incoming-handler@0.2.0` whose `handle` runs one core
//! function body and never touches its arguments. Shared by the host's tests
//! and the end-to-end suites, so each misbehaviour is written once.

pub mod bombs;

use wasm_encoder::{
    Alias, BlockType, CanonicalFunctionSection, CodeSection, Component, ComponentAliasSection,
    ComponentExportKind, ComponentExportSection, ComponentImportSection, ComponentInstanceSection,
    ComponentTypeRef, ComponentTypeSection, ComponentValType, ExportKind, ExportSection, Function,
    FunctionSection, InstanceSection, InstanceType, Instruction, MemorySection, MemoryType, Module,
    ModuleArg, ModuleSection, StartSection, TypeBounds, TypeSection, ValType,
};

/// A handler that traps at once (`unreachable`).
pub fn trapping() -> Vec<u8> {
    handler(&[Instruction::Unreachable], false)
}

/// A component that traps while being instantiated: its core module's start
/// function is `unreachable`, so it never gets to handle anything.
pub fn trapping_at_start() -> Vec<u8> {
    build(&[], false, true)
}

/// A handler that grows its one-page linear memory by `pages` (64 KiB
/// each), then traps if that failed and returns without a response if it
/// worked: "component failed" and "no response" tell the two apart.
pub fn greedy(pages: i32) -> Vec<u8> {
    handler(
        &[
            Instruction::I32Const(pages),
            Instruction::MemoryGrow(0),
            Instruction::I32Const(-1),
            Instruction::I32Eq,
            Instruction::If(BlockType::Empty),
            Instruction::Unreachable,
            Instruction::End,
        ],
        true,
    )
}

/// A handler that loops forever without calling the host.
pub fn looping() -> Vec<u8> {
    handler(
        &[
            Instruction::Loop(BlockType::Empty),
            Instruction::Br(0),
            Instruction::End,
        ],
        false,
    )
}

/// A handler that returns without setting a response.
pub fn silent() -> Vec<u8> {
    handler(&[], false)
}

/// A handler that is cheap to run and very costly to compile: `locals` i64
/// locals, each changed inside `depth` nested loops that each branch back to
/// their header. The compiler's SSA form gives every loop header a block
/// parameter per local, `locals × depth` values all live at once, and its
/// register allocator works on all of them: time and memory grow with the
/// product while the component stays small (about 8 bytes per local).
/// At most 49 998 locals (WebAssembly allows 50 000 with the two parameters).
pub fn compile_bomb(locals: u32, depth: u32) -> Vec<u8> {
    // Locals 0 and 1 are the handler's parameters.
    let own = 2..locals + 2;
    let mut body = Vec::new();
    body.extend((0..depth).map(|_| Instruction::Loop(BlockType::Empty)));
    for local in own {
        body.extend([
            Instruction::LocalGet(local),
            Instruction::I64Const(1),
            Instruction::I64Add,
            Instruction::LocalSet(local),
        ]);
    }
    // Back to the header while the first local is 0: never, once it ran.
    for _ in 0..depth {
        body.extend([
            Instruction::LocalGet(2),
            Instruction::I64Eqz,
            Instruction::BrIf(0),
            Instruction::End,
        ]);
    }
    build_with_locals(&body, false, false, locals)
}

/// A component whose `handle(request, response-out)` is a core function
/// with `body`, in a module with a one-page memory if `memory`.
fn handler(body: &[Instruction<'_>], memory: bool) -> Vec<u8> {
    build(body, memory, false)
}

/// [`handler`], with a start function that traps if `trap_at_start`.
fn build(body: &[Instruction<'_>], memory: bool, trap_at_start: bool) -> Vec<u8> {
    build_with_locals(body, memory, trap_at_start, 0)
}

/// [`build`], the handler having `locals` i64 locals besides its parameters.
fn build_with_locals(
    body: &[Instruction<'_>],
    memory: bool,
    trap_at_start: bool,
    locals: u32,
) -> Vec<u8> {
    let mut component = Component::new();

    // type 0: the part of `wasi:http/types` the handler's signature needs.
    let mut http_types = InstanceType::new();
    http_types.export(
        "incoming-request",
        ComponentTypeRef::Type(TypeBounds::SubResource),
    );
    http_types.export(
        "response-outparam",
        ComponentTypeRef::Type(TypeBounds::SubResource),
    );
    let mut types = ComponentTypeSection::new();
    types.instance(&http_types);
    component.section(&types);

    // instance 0
    let mut imports = ComponentImportSection::new();
    imports.import("wasi:http/types@0.2.0", ComponentTypeRef::Instance(0));
    component.section(&imports);

    // types 1 and 2: the two resources.
    let mut aliases = ComponentAliasSection::new();
    for name in ["incoming-request", "response-outparam"] {
        aliases.alias(Alias::InstanceExport {
            instance: 0,
            kind: ComponentExportKind::Type,
            name,
        });
    }
    component.section(&aliases);

    // types 3 and 4: owned handles; type 5: the handler's signature.
    let mut types = ComponentTypeSection::new();
    types.defined_type().own(1);
    types.defined_type().own(2);
    types
        .function()
        .params([
            ("request", ComponentValType::Type(3)),
            ("response-out", ComponentValType::Type(4)),
        ])
        .result(None);
    component.section(&types);

    // core module 0, core instance 0, core func 0.
    component.section(&ModuleSection(&core_module(
        body,
        memory,
        trap_at_start,
        locals,
    )));
    let mut instances = InstanceSection::new();
    instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    component.section(&instances);
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::CoreInstanceExport {
        instance: 0,
        kind: ExportKind::Func,
        name: "handle",
    });
    component.section(&aliases);

    // func 0, instance 1, exported.
    let mut canon = CanonicalFunctionSection::new();
    canon.lift(0, 5, []);
    component.section(&canon);
    let mut instances = ComponentInstanceSection::new();
    instances.export_items([("handle", ComponentExportKind::Func, 0)]);
    component.section(&instances);
    let mut exports = ComponentExportSection::new();
    exports.export(
        "wasi:http/incoming-handler@0.2.0",
        ComponentExportKind::Instance,
        1,
        None,
    );
    component.section(&exports);

    component.finish()
}

/// A core module exporting `handle: (i32, i32) -> ()` with `body` and
/// `locals` i64 locals, and with a trapping start function if `trap_at_start`.
fn core_module(body: &[Instruction<'_>], memory: bool, trap_at_start: bool, locals: u32) -> Module {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32, ValType::I32], []);
    types.ty().function([], []);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    if trap_at_start {
        functions.function(1);
    }
    module.section(&functions);
    if memory {
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
    }
    let mut exports = ExportSection::new();
    exports.export("handle", ExportKind::Func, 0);
    module.section(&exports);
    if trap_at_start {
        module.section(&StartSection { function_index: 1 });
    }
    let mut code = CodeSection::new();
    let mut function = Function::new((locals > 0).then_some((locals, ValType::I64)));
    for instruction in body {
        function.instruction(instruction);
    }
    function.instruction(&Instruction::End);
    code.function(&function);
    if trap_at_start {
        let mut start = Function::new([]);
        start.instruction(&Instruction::Unreachable);
        start.instruction(&Instruction::End);
        code.function(&start);
    }
    module.section(&code);
    module
}
