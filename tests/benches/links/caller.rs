//! The `links` bench's caller component, encoded with `wasm-encoder`: a guest that makes the
//! linked call, so the bench measures the call as a guest makes it.

use crate::{FUNCTION, IMPORT};

/// The caller component: imports `example:greeter/greet@0.1.0` (`greet: func(name: string) ->
/// string`) and exports `run: func(name: string) -> string`, which returns `greet(name)`.
///
/// Two core modules: `mem` (a one-page memory and a bump `realloc` that wraps around at the end
/// of the page: one call's strings are never more than a few KiB) and `main` (imports the memory
/// and the lowered `greet`; `run(ptr, len)` calls `greet(ptr, len, 0)`, which writes the result's
/// (ptr, len) at address 0, and returns 0).
pub fn component() -> Vec<u8> {
    use wasm_encoder::{
        Alias, CanonicalFunctionSection, CanonicalOption, CodeSection, Component,
        ComponentAliasSection, ComponentExportKind, ComponentExportSection, ComponentImportSection,
        ComponentTypeRef, ComponentTypeSection, ComponentValType, ConstExpr, EntityType,
        ExportKind, ExportSection, Function, FunctionSection, GlobalSection, GlobalType,
        ImportSection, InstanceSection, InstanceType, Instruction, MemorySection, MemoryType,
        Module, ModuleArg, ModuleSection, PrimitiveValType, TypeSection, ValType,
    };
    const PAGE: i32 = 65536;
    const HEAP: i32 = 16;
    let memory_type = MemoryType {
        minimum: 1,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    };
    let string = ComponentValType::Primitive(PrimitiveValType::String);

    // Core module 0, `mem`.
    let mut mem = Module::new();
    let mut types = TypeSection::new();
    types.ty().function(
        [ValType::I32, ValType::I32, ValType::I32, ValType::I32],
        [ValType::I32],
    );
    mem.section(&types);
    let mut functions = FunctionSection::new();
    functions.function(0);
    mem.section(&functions);
    let mut memories = MemorySection::new();
    memories.memory(memory_type);
    mem.section(&memories);
    let mut globals = GlobalSection::new();
    globals.global(
        GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        },
        &ConstExpr::i32_const(HEAP),
    );
    mem.section(&globals);
    let mut exports = ExportSection::new();
    exports.export("memory", ExportKind::Memory, 0);
    exports.export("realloc", ExportKind::Func, 0);
    mem.section(&exports);
    // realloc(old_ptr, old_size, align, new_size): 8-aligned bump; wraps to HEAP at the end.
    let mut realloc = Function::new([(1, ValType::I32)]);
    for i in [
        Instruction::GlobalGet(0),
        Instruction::I32Const(7),
        Instruction::I32Add,
        Instruction::I32Const(-8),
        Instruction::I32And,
        Instruction::LocalTee(4),
        Instruction::LocalGet(3),
        Instruction::I32Add,
        Instruction::I32Const(PAGE),
        Instruction::I32GtU,
        Instruction::If(wasm_encoder::BlockType::Empty),
        Instruction::I32Const(HEAP),
        Instruction::LocalSet(4),
        Instruction::End,
        Instruction::LocalGet(4),
        Instruction::LocalGet(3),
        Instruction::I32Add,
        Instruction::GlobalSet(0),
        Instruction::LocalGet(4),
        Instruction::End,
    ] {
        realloc.instruction(&i);
    }
    let mut code = CodeSection::new();
    code.function(&realloc);
    mem.section(&code);

    // Core module 1, `main`.
    let mut main = Module::new();
    let mut types = TypeSection::new();
    types
        .ty()
        .function([ValType::I32, ValType::I32, ValType::I32], []);
    types
        .ty()
        .function([ValType::I32, ValType::I32], [ValType::I32]);
    main.section(&types);
    let mut imports = ImportSection::new();
    imports.import("env", "memory", EntityType::Memory(memory_type));
    imports.import("env", "greet", EntityType::Function(0));
    main.section(&imports);
    let mut functions = FunctionSection::new();
    functions.function(1);
    main.section(&functions);
    let mut exports = ExportSection::new();
    exports.export("run", ExportKind::Func, 1);
    main.section(&exports);
    let mut run = Function::new([]);
    for i in [
        Instruction::LocalGet(0),
        Instruction::LocalGet(1),
        Instruction::I32Const(0),
        Instruction::Call(0),
        Instruction::I32Const(0),
        Instruction::End,
    ] {
        run.instruction(&i);
    }
    let mut code = CodeSection::new();
    code.function(&run);
    main.section(&code);

    let mut component = Component::new();
    // Type 0: the imported interface; type 1: `func(name: string) -> string`.
    let mut interface = InstanceType::new();
    interface
        .ty()
        .function()
        .params([("name", string)])
        .result(Some(string));
    interface.export(FUNCTION, ComponentTypeRef::Func(0));
    let mut types = ComponentTypeSection::new();
    types.instance(&interface);
    types
        .function()
        .params([("name", string)])
        .result(Some(string));
    component.section(&types);
    // Component instance 0.
    let mut imports = ComponentImportSection::new();
    imports.import(IMPORT, ComponentTypeRef::Instance(0));
    component.section(&imports);
    // Component func 0: greet.
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::InstanceExport {
        instance: 0,
        kind: ComponentExportKind::Func,
        name: FUNCTION,
    });
    component.section(&aliases);
    // Core modules 0 and 1; core instance 0 = mem.
    component.section(&ModuleSection(&mem));
    component.section(&ModuleSection(&main));
    let mut instances = InstanceSection::new();
    instances.instantiate(0, Vec::<(&str, ModuleArg)>::new());
    component.section(&instances);
    // Core memory 0, core func 0 (realloc).
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::CoreInstanceExport {
        instance: 0,
        kind: ExportKind::Memory,
        name: "memory",
    });
    aliases.alias(Alias::CoreInstanceExport {
        instance: 0,
        kind: ExportKind::Func,
        name: "realloc",
    });
    component.section(&aliases);
    let options = || {
        [
            CanonicalOption::UTF8,
            CanonicalOption::Memory(0),
            CanonicalOption::Realloc(0),
        ]
    };
    // Core func 1: greet lowered.
    let mut canon = CanonicalFunctionSection::new();
    canon.lower(0, options());
    component.section(&canon);
    // Core instance 1: main's imports; core instance 2: main.
    let mut instances = InstanceSection::new();
    instances.export_items([
        ("memory", ExportKind::Memory, 0),
        ("greet", ExportKind::Func, 1),
    ]);
    instances.instantiate(1, [("env", ModuleArg::Instance(1))]);
    component.section(&instances);
    // Core func 2: run; component func 1: run lifted, exported.
    let mut aliases = ComponentAliasSection::new();
    aliases.alias(Alias::CoreInstanceExport {
        instance: 2,
        kind: ExportKind::Func,
        name: "run",
    });
    component.section(&aliases);
    let mut canon = CanonicalFunctionSection::new();
    canon.lift(2, 1, options());
    component.section(&canon);
    let mut exports = ComponentExportSection::new();
    exports.export("run", ComponentExportKind::Func, 1, None);
    component.section(&exports);
    component.finish()
}
