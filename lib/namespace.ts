// Opens the native session for a target and turns every native rejection into an IpcCkptError.
import { fromNative, nativeCall } from './errors';
import { loadNative, NativeNamespace } from './native';
import type { ResolvedTarget } from './target';

export async function openNamespace(target: ResolvedTarget): Promise<NativeNamespace> {
  const session = await nativeCall(`opening ${target.label}`, () => loadNative().openNamespace(target.nsPath));
  return new Proxy(session, {
    get(object, property, receiver) {
      const value: unknown = Reflect.get(object, property, receiver);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) =>
        (value as (...a: unknown[]) => Promise<unknown>).apply(object, args).catch((error: unknown) => {
          throw fromNative(error);
        });
    },
  });
}
