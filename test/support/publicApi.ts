/**
 * What an embedder can reach: every name exported by the given declaration entry
 * points, and through their types every property, parameter and return type declared
 * by this package (types from node_modules are not walked: `effect` is not ours).
 * Private and protected members are not reachable and are skipped.
 */
import ts from "typescript"

/** Exported names, properties and parameters whose names say they are test-only. */
export const TEST_ONLY = /^unsafe[A-Z_]|mutant/i

export const testOnlyMentions = (
  entries: ReadonlyArray<{ readonly name: string; readonly file: string }>
): ReadonlyArray<string> => {
  const program = ts.createProgram(
    entries.map((e) => e.file),
    {
      strict: true,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      skipLibCheck: true,
      noEmit: true
    }
  )
  const checker = program.getTypeChecker()
  const seen = new Set<ts.Type>()
  const found = new Set<string>()
  const ours = (d: ts.Declaration) => !d.getSourceFile().fileName.includes("/node_modules/")
  const hidden = (d: ts.Declaration) =>
    (ts.getCombinedModifierFlags(d) & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) !== 0

  const visit = (type: ts.Type, where: string, depth: number): void => {
    if (depth > 12 || seen.has(type)) return
    seen.add(type)
    if (type.isUnionOrIntersection()) for (const t of type.types) visit(t, where, depth + 1)
    for (const a of type.aliasTypeArguments ?? []) visit(a, where, depth + 1)
    if (
      (type.flags & ts.TypeFlags.Object) !== 0 &&
      ((type as ts.ObjectType).objectFlags & ts.ObjectFlags.Reference) !== 0
    )
      for (const a of checker.getTypeArguments(type as ts.TypeReference)) visit(a, where, depth + 1)
    const declarations = (type.getSymbol() ?? type.aliasSymbol)?.getDeclarations() ?? []
    if (declarations.length > 0 && !declarations.some(ours)) return
    for (const p of checker.getPropertiesOfType(type)) {
      const d = p.valueDeclaration ?? p.declarations?.[0]
      if (d !== undefined && hidden(d)) continue
      if (TEST_ONLY.test(p.name)) found.add(`${where}.${p.name}`)
      if (d !== undefined) visit(checker.getTypeOfSymbolAtLocation(p, d), `${where}.${p.name}`, depth + 1)
    }
    for (const kind of [ts.SignatureKind.Call, ts.SignatureKind.Construct])
      for (const s of checker.getSignaturesOfType(type, kind)) {
        for (const p of s.parameters) {
          if (TEST_ONLY.test(p.name)) found.add(`${where}(${p.name})`)
          if (p.valueDeclaration !== undefined)
            visit(checker.getTypeOfSymbolAtLocation(p, p.valueDeclaration), `${where}(${p.name})`, depth + 1)
        }
        visit(s.getReturnType(), `${where}()`, depth + 1)
      }
  }

  for (const { name, file } of entries) {
    const source = program.getSourceFile(file)
    const module = source === undefined ? undefined : checker.getSymbolAtLocation(source)
    if (module === undefined) throw new Error(`${file}: not a module`)
    for (const exported of checker.getExportsOfModule(module)) {
      const where = `${name}:${exported.name}`
      if (TEST_ONLY.test(exported.name)) found.add(where)
      const target =
        (exported.flags & ts.SymbolFlags.Alias) !== 0 ? checker.getAliasedSymbol(exported) : exported
      for (const d of target.declarations ?? []) visit(checker.getTypeOfSymbolAtLocation(target, d), where, 0)
      if ((target.flags & (ts.SymbolFlags.Class | ts.SymbolFlags.Interface | ts.SymbolFlags.TypeAlias)) !== 0)
        visit(checker.getDeclaredTypeOfSymbol(target), where, 0)
      if ((target.flags & ts.SymbolFlags.Namespace) !== 0)
        for (const member of checker.getExportsOfModule(target))
          visit(checker.getDeclaredTypeOfSymbol(member), `${where}.${member.name}`, 0)
    }
  }
  return [...found].sort()
}
