// Live data without reloading the page: poll an endpoint on an interval while the page is visible, keep the last
// good value while a request is in flight (no flicker), and expose the error of the last attempt.
import { useCallback, useEffect, useRef, useState } from 'react';

export interface Polled<T> {
  data: T | null;
  error: string | null;
  refresh: () => void;
}

export function usePolling<T>(load: () => Promise<T>, intervalMs: number, deps: readonly unknown[] = []): Polled<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<string | null>(null);
  const loadRef = useRef(load);
  loadRef.current = load;
  const seq = useRef(0);

  const refresh = useCallback(() => {
    const mine = ++seq.current;
    loadRef.current().then(
      (v) => {
        if (mine !== seq.current) return; // a newer request (other filter) answered first
        setData(v);
        setError(null);
      },
      (e: unknown) => mine === seq.current && setError(e instanceof Error ? e.message : String(e)),
    );
  }, []);

  useEffect(() => {
    setData(null);
    refresh();
    const t = setInterval(() => document.visibilityState === 'visible' && refresh(), intervalMs);
    return () => clearInterval(t);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [intervalMs, refresh, ...deps]);

  return { data, error, refresh };
}

/** What a button or form reports once its request is answered. */
export interface ActionMessage {
  tone: 'error' | 'success';
  text: string;
}

/** The text of a failed request: the API's own message (it names the field) rather than "HTTP 400". */
export const errorText = (e: unknown): string => (e instanceof Error ? e.message : String(e));

export interface Action<K> {
  /** The key of the request in flight (a robot id, an action name, or `true`), so only its button is disabled. */
  pending: K | null;
  message: ActionMessage | null;
  /** Runs `work` unless another request of this action is in flight. A string it returns is shown as success;
   *  a throw is shown as `${failure}: <the API's message>`. Resolves to whether it succeeded. */
  run: (key: K, work: () => Promise<string | void>, failure: string) => Promise<boolean>;
  clear: () => void;
}

// Every form and button of both UIs had its own busy flag, message state and try/catch/finally: one place keeps
// them consistent (no double submit, the previous message cleared, errors worded the same way).
export function useAction<K = true>(): Action<K> {
  const [pending, setPending] = useState<K | null>(null);
  const [message, setMessage] = useState<ActionMessage | null>(null);
  const inFlight = useRef(false);

  const run = useCallback(async (key: K, work: () => Promise<string | void>, failure: string) => {
    if (inFlight.current) return false;
    inFlight.current = true;
    setPending(key);
    setMessage(null);
    try {
      const done = await work();
      if (typeof done === 'string') setMessage({ tone: 'success', text: done });
      return true;
    } catch (e) {
      setMessage({ tone: 'error', text: `${failure}: ${errorText(e)}` });
      return false;
    } finally {
      inFlight.current = false;
      setPending(null);
    }
  }, []);
  const clear = useCallback(() => setMessage(null), []);

  return { pending, message, run, clear };
}
