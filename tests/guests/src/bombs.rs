//! Guests that attack the host's limits (deep recursion, memory growth, a huge table) and a
//! guest that is merely slow (it sleeps through `wasi:clocks`), for the limits and guest-bomb
//! suites. Each is a `wasi:http/incoming-handler@0.2.0` component around one core module,
//! built here rather than by the simpler builder of the crate root because the slow guest
//! imports host functions.

use wasm_encoder::{
    Alias, BlockType, CanonicalFunctionSection, CodeSection, Component, ComponentAliasSection,
    ComponentExportKind, ComponentExportSection, ComponentImportSection, ComponentInstanceSection,
    ComponentTypeRef, ComponentTypeSection, ComponentValType, EntityType, ExportKind,
    ExportSection, Function, FunctionSection, ImportSection, InstanceSection, InstanceType,
    Instruction, MemorySection, MemoryType, Module, ModuleArg, PrimitiveValType, RefType,
    TableSection, TableType, TypeBounds, TypeSection, ValType,
};

/// A handler that calls a function that calls itself forever: the guest's stack overflows.
pub fn recursing() -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32, ValType::I32], []);
    types.ty().function([], []);
    module.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0).function(1);
    module.section(&functions);
    export_handle(&mut module, 0);
    let mut code = CodeSection::new();
    code.function(&body(&[Instruction::Call(1)]));
    code.function(&body(&[Instruction::Call(1)]));
    module.section(&code);
    component(&module, false)
}

/// A handler that grows its linear memory by 1 MiB at a time until a growth fails, then traps.
pub fn memory_hog() -> Vec<u8> {
    let mut module = handler_module();
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    // The section order is fixed: function, table, memory, export, code.
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    module.section(&memories);
    export_handle(&mut module, 0);
    let mut code = CodeSection::new();
    code.function(&body(&[
        Instruction::Loop(BlockType::Empty),
        Instruction::I32Const(16),
        Instruction::MemoryGrow(0),
        Instruction::I32Const(-1),
        Instruction::I32Ne,
        Instruction::BrIf(0),
        Instruction::End,
        Instruction::Unreachable,
    ]));
    module.section(&code);
    component(&module, false)
}

/// A handler that grows a table by `elements` at once, and traps if that failed (returning
/// without a response if it worked).
pub fn table_hog(elements: i32) -> Vec<u8> {
    let mut module = handler_module();
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut tables = TableSection::new();
    tables.table(TableType {
        element_type: RefType::FUNCREF,
        table64: false,
        minimum: 0,
        maximum: None,
        shared: false,
    });
    module.section(&tables);
    export_handle(&mut module, 0);
    let mut code = CodeSection::new();
    code.function(&body(&[
        Instruction::RefNull(wasm_encoder::HeapType::FUNC),
        Instruction::I32Const(elements),
        Instruction::TableGrow(0),
        Instruction::I32Const(-1),
        Instruction::I32Eq,
        Instruction::If(BlockType::Empty),
        Instruction::Unreachable,
        Instruction::End,
    ]));
    module.section(&code);
    component(&module, false)
}

/// A handler that sleeps `millis` (through `wasi:clocks/monotonic-clock.subscribe-duration`
/// and `wasi:io/poll.pollable.block`, so it holds an instance without using the CPU), then
/// returns without a response (answered 500 "no response").
pub fn sleepy(millis: u32) -> Vec<u8> {
    sleeper(millis, None)
}

/// [`sleepy`], after growing its one-page memory by `pages` (64 KiB each) and trapping if that
/// failed: it holds that much memory while it sleeps.
pub fn hungry(pages: i32, millis: u32) -> Vec<u8> {
    sleeper(millis, Some(pages))
}

fn sleeper(millis: u32, grow: Option<i32>) -> Vec<u8> {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32, ValType::I32], []);
    types.ty().function([ValType::I64], [ValType::I32]);
    types.ty().function([ValType::I32], []);
    module.section(&types);
    let mut imports = ImportSection::new();
    imports.import("host", "subscribe", EntityType::Function(1));
    imports.import("host", "block", EntityType::Function(2));
    imports.import("host", "drop", EntityType::Function(2));
    module.section(&imports);
    let mut functions = FunctionSection::new();
    functions.function(0);
    module.section(&functions);
    let mut instructions = Vec::new();
    if let Some(pages) = grow {
        let mut memories = MemorySection::new();
        memories.memory(MemoryType {
            minimum: 1,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        module.section(&memories);
        instructions.extend([
            Instruction::I32Const(pages),
            Instruction::MemoryGrow(0),
            Instruction::I32Const(-1),
            Instruction::I32Eq,
            Instruction::If(BlockType::Empty),
            Instruction::Unreachable,
            Instruction::End,
        ]);
    }
    // Imported functions come first: `handle` is function 3.
    export_handle(&mut module, 3);
    instructions.extend([
        Instruction::I64Const(i64::from(millis) * 1_000_000),
        Instruction::Call(0),
        Instruction::LocalTee(2),
        Instruction::Call(1),
        Instruction::LocalGet(2),
        Instruction::Call(2),
        Instruction::End,
    ]);
    let mut code = CodeSection::new();
    let mut handle = Function::new([(1, ValType::I32)]);
    for instruction in &instructions {
        handle.instruction(instruction);
    }
    code.function(&handle);
    module.section(&code);
    component(&module, true)
}

/// A module with the handler's type (type 0) and nothing else yet.
fn handler_module() -> Module {
    let mut module = Module::new();
    let mut types = TypeSection::new();
    types.ty().function([ValType::I32, ValType::I32], []);
    module.section(&types);
    module
}

fn export_handle(module: &mut Module, function: u32) {
    let mut exports = ExportSection::new();
    exports.export("handle", ExportKind::Func, function);
    module.section(&exports);
}

/// A function without locals running `instructions`.
fn body(instructions: &[Instruction<'_>]) -> Function {
    let mut function = Function::new([]);
    for instruction in instructions {
        function.instruction(instruction);
    }
    function.instruction(&Instruction::End);
    function
}

/// The component around `module`, whose `handle` export becomes the incoming handler; with
/// `sleeps`, the module imports `host.subscribe`, `host.block` and `host.drop` (the clock and
/// poll functions it needs to sleep).
fn component(module: &Module, sleeps: bool) -> Vec<u8> {
    let mut component = Component::new();
    // Component-level counters of the index spaces used below.
    let mut types = 0u32;
    let mut instances = 0u32;
    let mut core_funcs = 0u32;
    let mut host_instance = None;

    if sleeps {
        // type 0: wasi:io/poll with the pollable resource and its `block` method.
        let mut poll = InstanceType::new();
        poll.export("pollable", ComponentTypeRef::Type(TypeBounds::SubResource));
        poll.ty().defined_type().borrow(0);
        poll.ty()
            .function()
            .params([("self", ComponentValType::Type(1))])
            .result(None);
        poll.export("[method]pollable.block", ComponentTypeRef::Func(2));
        let mut section = ComponentTypeSection::new();
        section.instance(&poll);
        component.section(&section);
        let poll_type = types;
        types += 1;
        let mut imports = ComponentImportSection::new();
        imports.import("wasi:io/poll@0.2.0", ComponentTypeRef::Instance(poll_type));
        component.section(&imports);
        let poll_instance = instances;
        instances += 1;
        let mut aliases = ComponentAliasSection::new();
        aliases.alias(Alias::InstanceExport {
            instance: poll_instance,
            kind: ComponentExportKind::Type,
            name: "pollable",
        });
        component.section(&aliases);
        let pollable = types;
        types += 1;

        // wasi:clocks/monotonic-clock's `subscribe-duration`, returning the same pollable.
        let mut clock = InstanceType::new();
        clock.alias(Alias::Outer {
            kind: wasm_encoder::ComponentOuterAliasKind::Type,
            count: 1,
            index: pollable,
        });
        clock.export("pollable", ComponentTypeRef::Type(TypeBounds::Eq(0)));
        clock.ty().defined_type().own(1);
        clock
            .ty()
            .function()
            .params([("when", ComponentValType::Primitive(PrimitiveValType::U64))])
            .result(Some(ComponentValType::Type(2)));
        clock.export("subscribe-duration", ComponentTypeRef::Func(3));
        let mut section = ComponentTypeSection::new();
        section.instance(&clock);
        component.section(&section);
        let clock_type = types;
        types += 1;
        let mut imports = ComponentImportSection::new();
        imports.import(
            "wasi:clocks/monotonic-clock@0.2.0",
            ComponentTypeRef::Instance(clock_type),
        );
        component.section(&imports);
        let clock_instance = instances;
        instances += 1;

        // component funcs 0 and 1, lowered to core funcs 0 and 1; core func 2 drops a pollable.
        let mut aliases = ComponentAliasSection::new();
        aliases.alias(Alias::InstanceExport {
            instance: clock_instance,
            kind: ComponentExportKind::Func,
            name: "subscribe-duration",
        });
        aliases.alias(Alias::InstanceExport {
            instance: poll_instance,
            kind: ComponentExportKind::Func,
            name: "[method]pollable.block",
        });
        component.section(&aliases);
        let mut canon = CanonicalFunctionSection::new();
        canon.lower(0, []).lower(1, []).resource_drop(pollable);
        component.section(&canon);
        core_funcs += 3;
        let mut core = InstanceSection::new();
        core.export_items([
            ("subscribe", ExportKind::Func, 0),
            ("block", ExportKind::Func, 1),
            ("drop", ExportKind::Func, 2),
        ]);
        component.section(&core);
        host_instance = Some(0u32);
    }

    // The part of `wasi:http/types` the handler's signature needs.
    let mut http_types = InstanceType::new();
    http_types.export(
        "incoming-request",
        ComponentTypeRef::Type(TypeBounds::SubResource),
    );
    http_types.export(
        "response-outparam",
        ComponentTypeRef::Type(TypeBounds::SubResource),
    );
    let mut section = ComponentTypeSection::new();
    section.instance(&http_types);
    component.section(&section);
    let http_type = types;
    types += 1;
    let mut imports = ComponentImportSection::new();
    imports.import(
        "wasi:http/types@0.2.0",
        ComponentTypeRef::Instance(http_type),
    );
    component.section(&imports);
    let http_instance = instances;
    let mut aliases = ComponentAliasSection::new();
    for name in ["incoming-request", "response-outparam"] {
        aliases.alias(Alias::InstanceExport {
            instance: http_instance,
            kind: ComponentExportKind::Type,
            name,
        });
    }
    component.section(&aliases);
    let (request, outparam) = (types, types + 1);
    types += 2;
    let mut section = ComponentTypeSection::new();
    section.defined_type().own(request);
    section.defined_type().own(outparam);
    section
        .function()
        .params([
            ("request", ComponentValType::Type(types)),
            ("response-out", ComponentValType::Type(types + 1)),
        ])
        .result(None);
    component.section(&section);
    let handler_type = types + 2;

    component.section(&wasm_encoder::ModuleSection(module));
    let mut core = InstanceSection::new();
    match host_instance {
        Some(host) => core.instantiate(0, [("host", ModuleArg::Instance(host))]),
        None => core.instantiate(0, Vec::<(&str, ModuleArg)>::new()),
    };
    component.section(&core);
    let module_instance = u32::from(host_instance.is_some());
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::CoreInstanceExport {
        instance: module_instance,
        kind: ExportKind::Func,
        name: "handle",
    });
    component.section(&aliases);
    let handle = core_funcs;

    // The lifted handler is the component's first (sleepy: third) function.
    let lifted = if sleeps { 2 } else { 0 };
    let mut canon = CanonicalFunctionSection::new();
    canon.lift(handle, handler_type, []);
    component.section(&canon);
    let mut exported = ComponentInstanceSection::new();
    exported.export_items([("handle", ComponentExportKind::Func, lifted)]);
    component.section(&exported);
    let mut exports = ComponentExportSection::new();
    exports.export(
        "wasi:http/incoming-handler@0.2.0",
        ComponentExportKind::Instance,
        instances + 1,
        None,
    );
    component.section(&exports);
    component.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_guest_is_a_valid_component() {
        for (name, bytes) in [
            ("recursing", recursing()),
            ("memory_hog", memory_hog()),
            ("table_hog", table_hog(1 << 20)),
            ("sleepy", sleepy(10)),
            ("hungry", hungry(16, 10)),
        ] {
            // Validated with the component model on, as wasmtime will.
            let mut validator =
                wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all());
            if let Err(e) = validator.validate_all(&bytes) {
                panic!("{name}: {e}");
            }
        }
    }
}
