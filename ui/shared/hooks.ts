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
